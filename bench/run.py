"""rootfs benchmark: the library's cost as ratios to the physical limit.

    python bench/run.py            # full run (a few minutes; debootstrap if installed)
    python bench/run.py --quick    # short run, for CI as a smoke test
    python bench/run.py --json     # results as JSON on stdout (the table goes to stderr)

Every measurement is taken side by side with its baseline, alternating one
with the other, and reduced to a median, because these machines are noisy:
absolute times drift by tens of percent between minutes, ratios of
interleaved medians do not. Nothing here asserts a time; the exit status
says only whether the run worked and cleaned up after itself (0), failed
while measuring (1), or left something behind (3).

Everything is made under /tmp/rootfs-bench-<pid>/: roots are removed with the
library (or the baseline's own unmount), and at the end the mount table is
checked, leftovers are unmounted by path, and the directory is deleted only
once nothing is mounted below it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import hygiene
import prototypes
from rawops import RawOverlay, RawQuilt

from rootfs_core import RootFS

EXIT_OK, EXIT_FAILED, EXIT_LEFTOVERS = 0, 1, 3


@dataclass(frozen=True)
class Settings:
    """How much to measure: the full run for the docs, the quick one for CI."""

    quick: bool
    overhead_reps: int
    quilt_reps: int
    cli_reps: int
    scale_counts: tuple[int, ...]
    scale_reps: int
    size_reps: int
    throughput_procs: tuple[int, ...]
    throughput_seconds: float
    throughput_rounds: int
    debootstrap: bool

    @classmethod
    def make(cls, quick: bool, debootstrap: bool) -> Settings:
        if quick:
            return cls(True, 40, 12, 5, (10, 100), 30, 30, (1, 2, 4), 1.0, 1, False)
        return cls(False, 300, 60, 25, (10, 30, 100, 300, 1000), 100, 150, (1, 2, 4), 1.0, 5, debootstrap)


@dataclass
class Ratio:
    """One line of the results table: a ratio, its target, and whether it is met."""

    item: str
    name: str
    value: float
    target: float | None
    numerator: str
    denominator: str
    note: str = ""

    @property
    def status(self) -> str:
        if self.target is None:
            return "info"
        return "PASS" if self.value <= self.target else "MISS"

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status
        return data


@dataclass
class Results:
    """Everything one run measured, in the shape ``--json`` prints."""

    settings: dict[str, Any]
    machine: dict[str, Any]
    ratios: list[Ratio] = field(default_factory=list)
    medians_ms: dict[str, float] = field(default_factory=dict)
    scale: list[dict[str, float]] = field(default_factory=list)
    throughput: list[dict[str, float]] = field(default_factory=list)
    prototypes: dict[str, str] = field(default_factory=dict)
    cleanup: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = [r.as_json() for r in self.ratios]
        return data


def count_mounts() -> int:
    """Lines of the mount table (the host's, not only ours: for the record)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        return sum(1 for _ in fh)


def code_version() -> str:
    """The commit of the rootfs_core being measured, and whether its tree had
    local changes (an editable install measures the working tree as it is)."""
    import rootfs_core

    where = os.path.dirname(os.path.dirname(os.path.abspath(rootfs_core.__file__)))

    def git(*argv: str) -> str:
        proc = subprocess.run(["git", "-C", where, *argv], capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return f"{where} (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "rootfs_core", "plugins")
    return f"{where} at {commit}" + (" with local changes" if dirty else "")


def log(message: str) -> None:
    """Progress goes to stderr, so ``--json`` keeps stdout parseable."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def ms(values: list[float]) -> float:
    """Median in milliseconds."""
    return statistics.median(values) * 1000.0


def settle() -> None:
    """Write out what the run made so far (debootstrap's 200 MB above all)
    before the next item, so the next one does not pay for its writeback.
    This matters here: unmounting an overlay syncs its upper filesystem."""
    os.sync()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


class Cycles:
    """Generate/remove timings of one contender, kept apart so the report can
    say whether the cost is in making or in taking apart."""

    def __init__(self) -> None:
        self.generate: list[float] = []
        self.remove: list[float] = []

    @property
    def total(self) -> list[float]:
        return [g + r for g, r in zip(self.generate, self.remove, strict=True)]

    def run(self, generate: Callable[[], str], remove: Callable[[str], None]) -> None:
        gen_s, handle = timed(generate)
        try:
            rm_s, _ = timed(lambda: remove(handle))
        except BaseException:
            self.generate.append(gen_s)
            raise
        self.generate.append(gen_s)
        self.remove.append(rm_s)


def interleaved(contenders: list[tuple[Cycles, Callable[[], str], Callable[[str], None]]], reps: int) -> None:
    """Run ``reps`` cycles of each contender, alternating (and flipping the
    order every round), after one warm-up cycle each that is not counted."""
    for _cycles, generate, remove in contenders:
        remove(generate())
    for rep in range(reps):
        order = contenders if rep % 2 == 0 else list(reversed(contenders))
        for cycles, generate, remove in order:
            cycles.run(generate, remove)


# ---------------------------------------------------------------- the items
def item_overhead(res: Results, s: Settings, work: str, busybox: str) -> None:
    """Items 1 and 2: RootFS.generate+remove against the raw kernel sequence."""
    os.makedirs(f"{work}/lib-overlay")
    os.makedirs(f"{work}/raw-overlay")
    lib = RootFS(f"{work}/lib-overlay", backend="overlayfs")
    raw = RawOverlay(f"{work}/raw-overlay", busybox)
    lib_c, raw_c = Cycles(), Cycles()
    log(f"1. overlayfs: library vs raw, {s.overhead_reps} cycles each")
    interleaved(
        [(lib_c, lambda: lib.generate(busybox), lib.remove), (raw_c, raw.generate, raw.remove)],
        s.overhead_reps,
    )
    res.medians_ms |= {
        "overlay.lib.generate": ms(lib_c.generate),
        "overlay.lib.remove": ms(lib_c.remove),
        "overlay.lib.cycle": ms(lib_c.total),
        "overlay.raw.generate": ms(raw_c.generate),
        "overlay.raw.remove": ms(raw_c.remove),
        "overlay.raw.cycle": ms(raw_c.total),
    }
    m = res.medians_ms
    res.ratios.append(
        Ratio(
            "1",
            "overlayfs generate+remove, library / raw",
            m["overlay.lib.cycle"] / m["overlay.raw.cycle"],
            1.25,
            f"{m['overlay.lib.cycle']:.2f} ms",
            f"{m['overlay.raw.cycle']:.2f} ms",
            f"generate {m['overlay.lib.generate'] / m['overlay.raw.generate']:.2f}x, "
            f"remove {m['overlay.lib.remove'] / m['overlay.raw.remove']:.2f}x",
        )
    )

    os.makedirs(f"{work}/lib-quilt")
    os.makedirs(f"{work}/raw-quilt")
    qlib = RootFS(f"{work}/lib-quilt", backend="quilt")
    qraw = RawQuilt(f"{work}/raw-quilt", busybox)
    ql, qr = Cycles(), Cycles()
    log(f"1./2. quilt: library vs raw (cp -a + binds), {s.quilt_reps} cycles each")
    interleaved(
        [(ql, lambda: qlib.generate(busybox), qlib.remove), (qr, qraw.generate, qraw.remove)], s.quilt_reps
    )
    res.medians_ms |= {
        "quilt.lib.generate": ms(ql.generate),
        "quilt.lib.remove": ms(ql.remove),
        "quilt.lib.cycle": ms(ql.total),
        "quilt.raw.generate": ms(qr.generate),
        "quilt.raw.remove": ms(qr.remove),
        "quilt.raw.cycle": ms(qr.total),
    }
    res.ratios.append(
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
    res.ratios.append(
        Ratio(
            "2",
            "quilt generate / (cp -a --reflink=auto + binds)",
            m["quilt.lib.generate"] / m["quilt.raw.generate"],
            1.1,
            f"{m['quilt.lib.generate']:.2f} ms",
            f"{m['quilt.raw.generate']:.2f} ms",
        )
    )


def _cli_command() -> list[str]:
    """The installed ``rootfs`` console script beside this interpreter (not a
    pyenv shim, which is itself a shell script), else ``-m rootfs_core.cli``."""
    script = os.path.join(os.path.dirname(sys.executable), "rootfs")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "rootfs_core.cli"]


def item_cli(res: Results, s: Settings, work: str, busybox: str, warm_cache: str) -> None:
    """Item 3: ``rootfs generate`` + ``rootfs remove`` against ``python -c pass``,
    with the probe cache warm (the usual case) and off (every call probes)."""
    base = f"{work}/cli"
    os.makedirs(base)
    cli = _cli_command()
    # Bytecode as an installed package has it: written once by the warm-up
    # call (under our work dir, not into the source tree) and read after, even
    # where the caller's environment says PYTHONDONTWRITEBYTECODE.
    drop = ("ROOTFS_BACKEND", "PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {
        "ROOTFS_CONFIG": f"{work}/no-config.toml",
        "ROOTFS_BASE_DIR": base,
        "PYTHONPYCACHEPREFIX": f"{work}/pycache",
    }
    envs = {"warm": env | {"ROOTFS_CACHE": warm_cache}, "cold": env | {"ROOTFS_CACHE": ""}}

    def run(argv: list[str], e: dict[str, str]) -> tuple[float, str]:
        seconds, proc = timed(
            lambda: subprocess.run(argv, env=e, capture_output=True, text=True, check=False)
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return seconds, proc.stdout.strip()

    def cycle(kind: str) -> tuple[float, float]:
        gen, root = run([*cli, "generate", busybox], envs[kind])
        rm, _ = run([*cli, "remove", root], envs[kind])
        return gen, rm

    cycle("warm")  # writes the bytecode, warms the page cache and the probe cache
    run([sys.executable, "-c", "pass"], env)
    times: dict[str, list[float]] = {
        "pass": [],
        "nosite": [],
        "warm.gen": [],
        "warm.rm": [],
        "cold.gen": [],
        "cold.rm": [],
    }
    log(f"3. CLI: {s.cli_reps} rounds of python -c pass, generate+remove warm, generate+remove cold")
    for _ in range(s.cli_reps):
        times["pass"].append(run([sys.executable, "-c", "pass"], env)[0])
        # What site (.pth files, editable-install finders) adds to the baseline
        # in this environment: a development install can triple it.
        times["nosite"].append(run([sys.executable, "-S", "-c", "pass"], env)[0])
        for kind in ("warm", "cold"):
            gen, rm = cycle(kind)
            times[f"{kind}.gen"].append(gen)
            times[f"{kind}.rm"].append(rm)
    m = {f"cli.{k}": ms(v) for k, v in times.items()}
    res.medians_ms |= m
    for kind in ("warm", "cold"):
        pair = m[f"cli.{kind}.gen"] + m[f"cli.{kind}.rm"]
        res.ratios.append(
            Ratio(
                "3",
                f"CLI generate+remove / 2x python -c pass, probe cache {kind}",
                pair / (2 * m["cli.pass"]),
                3.0 if kind == "warm" else None,
                f"{pair:.1f} ms",
                f"2 x {m['cli.pass']:.1f} ms",
                f"per call: generate {m[f'cli.{kind}.gen'] / m['cli.pass']:.2f}x, "
                f"remove {m[f'cli.{kind}.rm'] / m['cli.pass']:.2f}x; "
                f"pair / one python -c pass {pair / m['cli.pass']:.2f}x; above python -c pass: "
                f"generate +{m[f'cli.{kind}.gen'] - m['cli.pass']:.0f} ms, "
                f"remove +{m[f'cli.{kind}.rm'] - m['cli.pass']:.0f} ms; "
                f"python -S -c pass {m['cli.nosite']:.1f} ms",
            )
        )

    # The library's own side of the probe cache: open a base dir, generate, remove.
    lib_base = f"{work}/open"
    os.makedirs(lib_base)
    opened: dict[str, list[float]] = {"warm": [], "cold": []}
    saved = os.environ.get("ROOTFS_CACHE")
    try:
        for _ in range(max(5, s.cli_reps)):
            for kind, cache in (("warm", warm_cache), ("cold", "")):
                os.environ["ROOTFS_CACHE"] = cache

                def once() -> None:
                    rfs = RootFS(lib_base)
                    rfs.remove(rfs.generate(busybox))

                opened[kind].append(timed(once)[0])
    finally:
        if saved is None:
            os.environ.pop("ROOTFS_CACHE", None)
        else:
            os.environ["ROOTFS_CACHE"] = saved
    res.medians_ms["open.warm"] = ms(opened["warm"])
    res.medians_ms["open.cold"] = ms(opened["cold"])
    res.ratios.append(
        Ratio(
            "3",
            "RootFS()+generate+remove, probe cache off / warm",
            ms(opened["cold"]) / ms(opened["warm"]),
            None,
            f"{ms(opened['cold']):.2f} ms",
            f"{ms(opened['warm']):.2f} ms",
            "what a fresh RootFS pays for probing when the cache is off or cold",
        )
    )


def item_scale(res: Results, s: Settings, work: str, busybox: str) -> None:
    """Item 4: the cost of one more generate+remove with N live instances,
    library and raw, on the same mount table (the live roots are the library's,
    so its records directory holds N records too)."""
    base, raw_base = f"{work}/scale", f"{work}/scale-raw"
    os.makedirs(base)
    os.makedirs(raw_base)
    lib = RootFS(base, backend="overlayfs")
    raw = RawOverlay(raw_base, busybox)
    live: list[str] = []
    try:
        for count in s.scale_counts:
            log(f"4. scale: filling to {count} live instances")
            while len(live) < count:
                live.append(lib.generate(busybox))
            lib_c, raw_c = Cycles(), Cycles()
            interleaved(
                [(lib_c, lambda: lib.generate(busybox), lib.remove), (raw_c, raw.generate, raw.remove)],
                s.scale_reps,
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
                1.3 if top else None,
                f"{row['lib_ms']:.2f} ms",
                f"{row['raw_ms']:.2f} ms",
                "" if not top or row["live"] >= 1000 else "target is for 1,000 live: run without --quick",
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


def item_size(res: Results, s: Settings, work: str, busybox: str, debian: str) -> None:
    """Item 5: overlayfs generate from a busybox prototype against a
    Debian-minbase-sized one, with the raw mount on both for the kernel's share."""
    os.makedirs(f"{work}/size")
    os.makedirs(f"{work}/size-raw")
    lib = RootFS(f"{work}/size", backend="overlayfs")
    raw_small, raw_big = RawOverlay(f"{work}/size-raw", busybox), RawOverlay(f"{work}/size-raw", debian)
    small, big, rsmall, rbig = Cycles(), Cycles(), Cycles(), Cycles()
    log(f"5. prototype size: busybox vs Debian-sized, {s.size_reps} cycles each")
    interleaved(
        [
            (small, lambda: lib.generate(busybox), lib.remove),
            (big, lambda: lib.generate(debian), lib.remove),
            (rsmall, raw_small.generate, raw_small.remove),
            (rbig, raw_big.generate, raw_big.remove),
        ],
        s.size_reps,
    )
    m = {
        "size.busybox.generate": ms(small.generate),
        "size.debian.generate": ms(big.generate),
        "size.busybox.cycle": ms(small.total),
        "size.debian.cycle": ms(big.total),
        "size.raw.busybox.generate": ms(rsmall.generate),
        "size.raw.debian.generate": ms(rbig.generate),
    }
    res.medians_ms |= m
    res.ratios.append(
        Ratio(
            "5",
            "overlayfs generate, Debian-sized / busybox prototype",
            m["size.debian.generate"] / m["size.busybox.generate"],
            1.2,
            f"{m['size.debian.generate']:.2f} ms",
            f"{m['size.busybox.generate']:.2f} ms",
            f"generate+remove {m['size.debian.cycle'] / m['size.busybox.cycle']:.2f}x; raw mount "
            f"{m['size.raw.debian.generate'] / m['size.raw.busybox.generate']:.2f}x",
        )
    )


def _throughput_worker(kind: str, base: str, prototype: str, start: float, seconds: float, out: Any) -> None:
    """One process generating and removing as fast as it can for ``seconds``."""
    try:
        if kind == "lib":
            lib = RootFS(base, backend="overlayfs")
            gen: Callable[[], str] = lambda: lib.generate(prototype)  # noqa: E731
            rem: Callable[[str], None] = lib.remove
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


def _throughput_slice(mp: Any, kind: str, base: str, busybox: str, procs: int, seconds: float) -> float:
    """Instances per second of ``procs`` processes of one kind, together, for ``seconds``."""
    out = mp.Queue()
    start = time.time() + 0.5
    workers = [
        mp.Process(target=_throughput_worker, args=(kind, base, busybox, start, seconds, out))
        for _ in range(procs)
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


def item_throughput(res: Results, s: Settings, work: str, busybox: str) -> None:
    """Item 6: instances per second with 1, 2 and 4 processes on one base dir,
    library and raw (raw processes each use their own names in another dir),
    in short slices that alternate library and raw, reduced to medians: one
    long slice each was at the mercy of whatever else the disk was doing."""
    mp = multiprocessing.get_context("fork")
    os.makedirs(f"{work}/tput")
    os.makedirs(f"{work}/tput-raw")
    bases = {"lib": f"{work}/tput", "raw": f"{work}/tput-raw"}
    for procs in s.throughput_procs:
        log(
            f"6. throughput: {procs} process(es), {s.throughput_rounds} x {s.throughput_seconds:.0f} s "
            "each of library and raw, alternating"
        )
        rates: dict[str, list[float]] = {"lib": [], "raw": []}
        for rnd in range(s.throughput_rounds):
            for kind in ("lib", "raw") if rnd % 2 == 0 else ("raw", "lib"):
                rates[kind].append(
                    _throughput_slice(mp, kind, bases[kind], busybox, procs, s.throughput_seconds)
                )
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


# ------------------------------------------------------------ the report
def table(res: Results, markdown: bool = False) -> str:
    """The ratios as a text table (or a Markdown one for docs/performance.md)."""
    head = ("#", "ratio", "measured", "baseline", "ratio", "target", "", "detail")
    rows = [
        (
            r.item,
            r.name,
            r.numerator,
            r.denominator,
            f"{r.value:.2f}x",
            f"<= {r.target:.2f}x" if r.target is not None else "-",
            r.status,
            r.note,
        )
        for r in res.ratios
    ]
    if markdown:
        lines = ["| " + " | ".join(head[:6]) + " | status | detail |", "|" + "---|" * 8]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        if res.throughput:
            lines += ["", "| processes | library inst/s | raw inst/s | library / raw |", "|---|---|---|---|"]
            lines += [
                f"| {t['processes']:.0f} | {t['lib_per_s']:.0f} | {t['raw_per_s']:.0f} "
                f"| {t['lib_over_raw']:.2f} |"
                for t in res.throughput
            ]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    widths[-1] = 0

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([fmt(head), *map(fmt, rows)]) + "\n"


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


# ------------------------------------------------------------ clean-up
def cleanup(work: str, res: Results) -> bool:
    """Remove every instance the library still knows of, then repair and
    verify from the mount table, then delete the work directory. Returns
    whether nothing is left."""
    leftovers: list[str] = []
    if os.path.isdir(work):
        for entry in sorted(os.scandir(work), key=lambda e: e.name):
            if not os.path.isdir(os.path.join(entry.path, ".rootfs")):
                continue
            try:
                rfs = RootFS(entry.path)  # sweeps incomplete instances on opening
                rfs.gc()
                for inst in rfs.instances():
                    leftovers.append(f"instance {inst.root}")
                    rfs.remove(inst.id)
            except Exception as exc:
                res.errors.append(f"cleanup of {entry.path}: {exc}")
    still = hygiene.mounts_below(work) if os.path.isdir(work) else []
    if still:
        leftovers += [f"mount {p}" for p in still]
        still = hygiene.unmount_all_below(work)
    deleted = not still and hygiene.delete_tree(work)
    res.cleanup = {
        "work_dir": work,
        "left_by_the_run": leftovers,  # found at the end, then repaired
        "mounts_still_below": still,
        "work_dir_deleted": deleted,
        "ok": deleted and not still,
    }
    return bool(res.cleanup["ok"])


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM (a CI timeout) unwinds like Ctrl-C, so every finally runs."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (CI smoke test)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--plot", metavar="PNG", help="write the cost-vs-live-instances plot here")
    parser.add_argument("--markdown", metavar="FILE", help="write the results table as Markdown here")
    parser.add_argument("--debian", metavar="DIR", help="an existing Debian prototype to use for item 5")
    parser.add_argument("--no-debootstrap", action="store_true", help="synthesise the Debian-sized tree")
    parser.add_argument("--only", metavar="ITEMS", help="comma-separated items to run (1,3,4,5,6; 2 is in 1)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("the benchmark mounts: run it as root")
    s = Settings.make(args.quick, debootstrap=not args.no_debootstrap)
    only = set(args.only.split(",")) if args.only else {"1", "3", "4", "5", "6"}

    work = f"/tmp/rootfs-bench-{os.getpid()}"
    res = Results(
        settings=asdict(s),
        machine={
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cpus": os.cpu_count() or 0,
            "work_dir": work,
            "mounts_at_start": count_mounts(),
            "load_at_start": os.getloadavg()[0],
            "code": code_version(),
        },
    )
    failed = False
    started = time.monotonic()
    with terminate_as_exit():
        try:
            os.mkdir(work, 0o700)
            # A probe cache of our own: warm after the first RootFS, and never
            # mixed with the host's /run/rootfs.
            warm_cache = f"{work}/probe-cache"
            os.environ["ROOTFS_CACHE"] = warm_cache
            os.environ.pop("ROOTFS_BACKEND", None)
            os.environ["ROOTFS_CONFIG"] = f"{work}/no-config.toml"  # absent, as on most hosts
            busybox = f"{work}/proto-busybox"
            res.prototypes["busybox"] = prototypes.busybox(busybox)
            if "1" in only:
                settle()
                item_overhead(res, s, work, busybox)
            if "3" in only:
                settle()
                item_cli(res, s, work, busybox, warm_cache)
            if "4" in only:
                settle()
                item_scale(res, s, work, busybox)
            if "5" in only:
                if args.debian:
                    debian = os.path.realpath(args.debian)
                    res.prototypes["debian"] = f"{debian} ({prototypes.count_files(debian)} files)"
                else:
                    debian = f"{work}/proto-debian"
                    log(
                        "5. building the Debian-sized prototype"
                        + (" with debootstrap" if s.debootstrap else "")
                    )
                    res.prototypes["debian"] = prototypes.debian(debian, try_debootstrap=s.debootstrap)
                settle()
                item_size(res, s, work, busybox, debian)
            if "6" in only:
                settle()
                item_throughput(res, s, work, busybox)
        except BaseException as exc:
            failed = True
            res.errors.append(f"{type(exc).__name__}: {exc}")
            log(f"FAILED: {type(exc).__name__}: {exc}")
            if not isinstance(exc, Exception):
                log("interrupted: cleaning up")
        finally:
            clean = cleanup(work, res)
    res.machine["seconds"] = round(time.monotonic() - started, 1)
    res.machine["mounts_at_end"] = count_mounts()
    res.machine["load_at_end"] = os.getloadavg()[0]

    print(table(res), file=sys.stderr if args.json else sys.stdout, end="")
    if args.markdown and res.ratios:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(table(res, markdown=True))
    if args.plot and res.scale:
        done = plot(res, args.plot)
        log(f"plot written to {done}" if done else "matplotlib is not installed: no plot")
    if args.json:
        print(json.dumps(res.as_json(), indent=1))
    log(f"{res.machine['seconds']} s; cleanup {'ok' if clean else 'FAILED: ' + json.dumps(res.cleanup)}")
    if not clean:
        return EXIT_LEFTOVERS
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    os.umask(0o022)  # the raw baselines rely on mkdir modes as the library sets them
    sys.exit(main())
