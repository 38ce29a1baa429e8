"""Item 4: the cost of one more generate+remove with N live instances,
library and raw, on the same mount table (the live roots are the library's,
so its records directory holds N records too); and the figure of it that
``--plot`` draws."""

from __future__ import annotations

import os

from measure import Bench, Cycles, Ratio, Results, interleaved, log, ms
from rawops import RawOverlay

from rootfs_core import RootFS

TARGET = 1.5  # issue 15: per op at 1,000 live, library / raw
TARGET_LIVE = 1000


def run(b: Bench) -> None:
    base, raw_base = f"{b.work}/scale", f"{b.work}/scale-raw"
    os.makedirs(base)
    os.makedirs(raw_base)
    lib = RootFS(base, backend="overlayfs")
    raw = RawOverlay(raw_base, b.busybox)
    res = b.results
    live: list[str] = []
    try:
        for count in b.settings.scale_counts:
            log(f"4. scale: filling to {count} live instances")
            while len(live) < count:
                live.append(lib.generate(b.busybox))
            lib_c, raw_c = Cycles(), Cycles()
            interleaved(
                [(lib_c, lambda: lib.generate(b.busybox), lib.remove), (raw_c, raw.generate, raw.remove)],
                b.settings.scale_reps,
            )
            res.scale.append(
                {
                    "live": count,
                    "lib_ms": ms(lib_c.total),
                    "raw_ms": ms(raw_c.total),
                    "lib_generate_ms": ms(lib_c.generate),
                    "lib_remove_ms": ms(lib_c.remove),
                    "raw_generate_ms": ms(raw_c.generate),
                    "raw_remove_ms": ms(raw_c.remove),
                }
            )
    finally:
        log(f"4. scale: removing {len(live)} live instances")
        for root in reversed(live):
            lib.remove(root)
    first, last = res.scale[0], res.scale[-1]
    for row in res.scale:
        top = row is last
        res.ratios.append(
            Ratio(
                "4",
                f"per op at {row['live']:.0f} live, library / raw",
                row["lib_ms"] / row["raw_ms"],
                TARGET if top else None,
                f"{row['lib_ms']:.2f} ms",
                f"{row['raw_ms']:.2f} ms",
                "target is for 1,000 live: run without --quick" if top and row["live"] < TARGET_LIVE else "",
            )
        )
    res.ratios.append(
        Ratio(
            "4",
            f"growth {first['live']:.0f} -> {last['live']:.0f} live, library",
            last["lib_ms"] / first["lib_ms"],
            None,
            f"{last['lib_ms']:.2f} ms",
            f"{first['lib_ms']:.2f} ms",
            f"raw grows {last['raw_ms'] / first['raw_ms']:.2f}x over the same range (the kernel's share)",
        )
    )


def plot(res: Results, path: str) -> str | None:
    """Cost per generate+remove against live instances, library and raw; None
    without matplotlib (the plot is optional, the numbers are not)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    live = [r["live"] for r in res.scale]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    ax.plot(live, [r["lib_ms"] for r in res.scale], "o-", label="library (RootFS, overlayfs)")
    ax.plot(live, [r["raw_ms"] for r in res.scale], "s--", label="raw syscalls (same mounts)")
    ax.plot(
        live, [r["lib_generate_ms"] for r in res.scale], ":", color="C0", alpha=0.6, label="library: generate"
    )
    ax.plot(
        live, [r["lib_remove_ms"] for r in res.scale], "-.", color="C0", alpha=0.6, label="library: remove"
    )
    ax.set_xscale("log")
    ax.set_xlabel("live instances (overlay mounts)")
    ax.set_ylabel("median ms per generate+remove")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot(live, [r["lib_ms"] / r["raw_ms"] for r in res.scale], "^-", color="C3", label="library / raw")
    ax2.set_ylabel("library / raw", color="C3")
    ax2.set_ylim(0, max(2.0, max(r["lib_ms"] / r["raw_ms"] for r in res.scale) * 1.2))
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="lower right", fontsize=7)
    ax.set_title("rootfs: cost of one more instance vs live instances")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
