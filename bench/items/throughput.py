"""Item 6: instances per second with 1, 2 and 4 processes on one base
directory, library and raw (raw processes each use their own names in
another directory), in short slices that alternate library and raw,
reduced to medians: one long slice each was at the mercy of whatever else
the disk was doing."""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from measure import Bench, Ratio, log
from rawops import RawOverlay

from rootfs_core import RootFS


def _worker(kind: str, base: str, prototype: str, start: float, seconds: float, out: Any) -> None:
    """One process generating and removing as fast as it can for ``seconds``."""
    try:
        if kind == "lib":
            lib = RootFS(base, backend="overlayfs")
            gen: Callable[[], str] = lambda: lib.generate(prototype)  # noqa: E731
            rem: Callable[[str], object] = lib.remove
        else:
            raw = RawOverlay(base, prototype)
            gen, rem = raw.generate, raw.remove
        rem(gen())  # warm-up, before the common start
        time.sleep(max(0.0, start - time.time()))
        began = time.perf_counter()
        done = 0
        while time.perf_counter() - began < seconds:
            rem(gen())
            done += 1
        out.put((done, time.perf_counter() - began, None))
    except BaseException as exc:
        out.put((0, 0.0, f"{type(exc).__name__}: {exc}"))
        raise


def _slice(mp: Any, kind: str, base: str, busybox: str, procs: int, seconds: float) -> float:
    """Instances per second of ``procs`` processes of one kind, together, for ``seconds``."""
    out = mp.Queue()
    start = time.time() + 0.5
    workers = [
        mp.Process(target=_worker, args=(kind, base, busybox, start, seconds, out)) for _ in range(procs)
    ]
    for w in workers:
        w.start()
    results = [out.get(timeout=120 + seconds) for _ in workers]
    for w in workers:
        w.join(30)
    failures = [r[2] for r in results if r[2]]
    if failures:
        raise RuntimeError(f"throughput worker failed: {failures[0]}")
    return float(sum(done / elapsed for done, elapsed, _ in results))


def run(b: Bench) -> None:
    s, res = b.settings, b.results
    mp = multiprocessing.get_context("fork")
    bases = {"lib": f"{b.work}/tput", "raw": f"{b.work}/tput-raw"}
    for base in bases.values():
        os.makedirs(base)
    for procs in s.throughput_procs:
        log(
            f"6. throughput: {procs} process(es), {s.throughput_rounds} x {s.throughput_seconds:.0f} s "
            "each of library and raw, alternating"
        )
        rates: dict[str, list[float]] = {"lib": [], "raw": []}
        for rnd in range(s.throughput_rounds):
            for kind in ("lib", "raw") if rnd % 2 == 0 else ("raw", "lib"):
                rates[kind].append(_slice(mp, kind, bases[kind], b.busybox, procs, s.throughput_seconds))
        row: dict[str, float] = {"processes": procs}
        for kind in ("lib", "raw"):
            row[f"{kind}_per_s"] = statistics.median(rates[kind])
        row["lib_over_raw"] = row["lib_per_s"] / row["raw_per_s"]
        res.throughput.append(row)
    one = res.throughput[0]["lib_per_s"]
    for row in res.throughput:
        res.ratios.append(
            Ratio(
                "6",
                f"throughput, {row['processes']:.0f} process(es), library / raw",
                row["lib_over_raw"],
                None,
                f"{row['lib_per_s']:.0f}/s",
                f"{row['raw_per_s']:.0f}/s",
                f"library scaling vs 1 process {row['lib_per_s'] / one:.2f}x",
            )
        )
