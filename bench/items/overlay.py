"""Item 1: a library overlayfs generate+remove against the raw kernel sequence
(``rawops.RawOverlay``: the backend's directories and mount options, and
nothing around them), interleaved on the busybox prototype."""

from __future__ import annotations

from measure import Bench, Ratio, library_vs_raw, log
from rawops import RawOverlay

TARGET = 1.5  # issue 15
FAR_GOAL = 1.25  # issue 8's target, kept in sight in the detail


def run(b: Bench) -> None:
    reps = b.settings.overhead_reps
    log(f"1. overlayfs: library vs raw, {reps} cycles each")
    m = library_vs_raw(b, "overlay", "overlayfs", RawOverlay, reps)
    b.results.medians_ms |= m
    b.results.ratios.append(
        Ratio(
            "1",
            "overlayfs generate+remove, library / raw",
            m["overlay.lib.cycle"] / m["overlay.raw.cycle"],
            TARGET,
            f"{m['overlay.lib.cycle']:.2f} ms",
            f"{m['overlay.raw.cycle']:.2f} ms",
            f"generate {m['overlay.lib.generate'] / m['overlay.raw.generate']:.2f}x, "
            f"remove {m['overlay.lib.remove'] / m['overlay.raw.remove']:.2f}x; far goal <= {FAR_GOAL:.2f}x",
        )
    )
