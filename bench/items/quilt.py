"""Items 1 (its quilt line) and 2: a library quilt generate+remove against
``rawops.RawQuilt`` (a bind and read-only remount of the prototype, then
the same ``cp -a --reflink=auto`` and a bind per writable directory). One
measurement serves both: item 2 is its generate half."""

from __future__ import annotations

from measure import Bench, Ratio, library_vs_raw, log
from rawops import RawQuilt

TARGET = 1.1  # item 2: the library's generate over the copies it makes


def run(b: Bench) -> None:
    reps = b.settings.quilt_reps
    log(f"1./2. quilt: library vs raw (cp -a + binds), {reps} cycles each")
    m = library_vs_raw(b, "quilt", "quilt", RawQuilt, reps)
    b.results.medians_ms |= m
    b.results.ratios.append(
        Ratio(
            "1",
            "quilt generate+remove, library / raw",
            m["quilt.lib.cycle"] / m["quilt.raw.cycle"],
            None,
            f"{m['quilt.lib.cycle']:.2f} ms",
            f"{m['quilt.raw.cycle']:.2f} ms",
            f"remove {m['quilt.lib.remove'] / m['quilt.raw.remove']:.2f}x",
        )
    )
    b.results.ratios.append(
        Ratio(
            "2",
            "quilt generate / (cp -a --reflink=auto + binds)",
            m["quilt.lib.generate"] / m["quilt.raw.generate"],
            TARGET,
            f"{m['quilt.lib.generate']:.2f} ms",
            f"{m['quilt.raw.generate']:.2f} ms",
        )
    )
