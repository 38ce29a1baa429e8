"""What every item of the benchmark shares: its settings, the results it adds
to, and the one way a cost is timed.

Every measurement is taken side by side with its baseline, alternating one
with the other, and reduced to a median, because these machines are noisy:
absolute times drift by tens of percent between minutes, ratios of
interleaved medians do not.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from rootfs_core import RootFS


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
    peer_reps: int
    debootstrap: bool

    @classmethod
    def make(cls, quick: bool, debootstrap: bool) -> Settings:
        if quick:
            return cls(True, 40, 12, 5, (10, 100), 30, 30, (1, 2, 4), 1.0, 1, 5, False)
        return cls(False, 300, 60, 25, (10, 30, 100, 300, 1000), 100, 150, (1, 2, 4), 1.0, 5, 25, debootstrap)


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
    notes: list[str] = field(default_factory=list)  # what was skipped and why
    cleanup: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ratios"] = [r.as_json() for r in self.ratios]
        return data


@dataclass(frozen=True)
class Bench:
    """What the driver hands every item: how much to measure, where to add
    the results, and the run's work directory, prototype and probe cache."""

    settings: Settings
    results: Results
    work: str  # /tmp/rootfs-bench-<pid>: everything an item makes goes below it
    busybox: str  # the sample prototype every item generates from
    warm_cache: str  # ROOTFS_CACHE of the run: warm after the first RootFS
    debian: str | None  # --debian DIR for item 5, else it builds one


def log(message: str) -> None:
    """Progress goes to stderr, so ``--json`` keeps stdout parseable."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def ms(values: list[float]) -> float:
    """Median in milliseconds."""
    return statistics.median(values) * 1000.0


def settle() -> None:
    """Write out what the run made so far (debootstrap's 200 MB above all)
    before the next measurement, so it does not pay for that writeback.
    This matters here: unmounting an overlay syncs its upper filesystem."""
    os.sync()


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def command(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run a program to its end, timed; return the seconds and its stdout,
    stripped. A failure raises with its stderr: the time of a call that
    failed measures nothing."""
    seconds, proc = timed(
        lambda: subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
        )
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return seconds, proc.stdout.strip()


class Cycles:
    """Generate/remove timings of one contender, kept apart so the report can
    say whether the cost is in making or in taking apart."""

    def __init__(self) -> None:
        self.generate: list[float] = []
        self.remove: list[float] = []

    @property
    def total(self) -> list[float]:
        return [g + r for g, r in zip(self.generate, self.remove, strict=True)]

    def run(self, generate: Callable[[], str], remove: Callable[[str], object]) -> None:
        gen_s, handle = timed(generate)
        try:
            rm_s, _ = timed(lambda: remove(handle))
        except BaseException:
            self.generate.append(gen_s)
            raise
        self.generate.append(gen_s)
        self.remove.append(rm_s)


Pair = tuple[Callable[[], str], Callable[[str], object]]  # a contender's generate and remove
Contender = tuple[Cycles, Callable[[], str], Callable[[str], object]]


def interleaved(contenders: list[Contender], reps: int) -> None:
    """Run ``reps`` cycles of each contender, alternating (and flipping the
    order every round), after one warm-up cycle each that is not counted."""
    for _cycles, generate, remove in contenders:
        remove(generate())
    for rep in range(reps):
        order = contenders if rep % 2 == 0 else list(reversed(contenders))
        for cycles, generate, remove in order:
            cycles.run(generate, remove)


def compared(prefix: str, reps: int, **contenders: Pair) -> dict[str, float]:
    """Interleave the contenders (name: (generate, remove)); return the medians
    of each one's generate, remove and whole cycle as ``PREFIX.NAME.generate``,
    ``.remove`` and ``.cycle``, in ms."""
    cycles = {name: Cycles() for name in contenders}
    interleaved([(cycles[name], gen, rm) for name, (gen, rm) in contenders.items()], reps)
    found: dict[str, float] = {}
    for name, c in cycles.items():
        found |= {
            f"{prefix}.{name}.generate": ms(c.generate),
            f"{prefix}.{name}.remove": ms(c.remove),
            f"{prefix}.{name}.cycle": ms(c.total),
        }
    return found


class Baseline(Protocol):
    """A raw baseline (``rawops``): the same kernel work as a backend, nothing around it."""

    def generate(self) -> str: ...

    def remove(self, inst: str) -> None: ...


def library_vs_raw(
    b: Bench, key: str, backend: str, raw: Callable[[str, str], Baseline], reps: int
) -> dict[str, float]:
    """The library's cycle on ``backend`` against the raw baseline's, each in
    a directory of its own below the work directory, on the busybox
    prototype: ``compared``'s medians as KEY.lib.* and KEY.raw.*."""
    lib_dir, raw_dir = f"{b.work}/lib-{key}", f"{b.work}/raw-{key}"
    os.makedirs(lib_dir)
    os.makedirs(raw_dir)
    lib = RootFS(lib_dir, backend=backend)
    base = raw(raw_dir, b.busybox)
    return compared(
        key, reps, lib=(lambda: lib.generate(b.busybox), lib.remove), raw=(base.generate, base.remove)
    )
