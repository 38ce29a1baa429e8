"""Where the library's time goes: cProfile of generate+remove cycles, and the
calls that docs/performance.md counts per cycle.

    python bench/profile_ops.py overlayfs          # 300 cycles, top functions by own time
    python bench/profile_ops.py quilt --cycles 40
    python bench/profile_ops.py cli                # one `rootfs generate` + `remove`, in-process
    python bench/profile_ops.py breakdown          # library vs raw, each call timed in place, us/cycle
    python bench/profile_ops.py breakdown --backend quilt --cycles 40

Counts per cycle (journal appends, statx, mkdir, ...) come from the profile, so
they hold on any machine; the times are inflated by cProfile and only say
which share is which. ``breakdown`` runs library and raw cycles alternating
with every system call and journal function wrapped by a timer (no
profiler: about 1 us per wrapped call), and prints each one's exclusive
time per cycle for both, and their difference: where the gap goes. Works
in its own /tmp/rootfs-bench-<pid>/ and leaves nothing behind (the same
checks as run.py).
"""

from __future__ import annotations

import argparse
import cProfile
import fcntl
import io
import os
import pstats
import statistics
import subprocess
import sys
import time
from typing import Any

import hygiene
import prototypes
import rawops
from rawops import RawOverlay, RawQuilt

from rootfs_core import RootFS
from rootfs_core import syscalls as syscalls_module
from rootfs_core.registry import Registry
from rootfs_core.store import STATE_DIR, Store
from rootfs_core.syscalls import LinuxSyscalls

# (label, file suffix, function name) of the calls worth counting per cycle.
COUNTED = (
    ("journal appends (Store.append)", "store.py", "append"),
    ("records created, marked and held (Store.claim_new)", "store.py", "claim_new"),
    ("records read (Store.read)", "store.py", "read"),
    ("record rewrites (Store.write, rare paths)", "store.py", "write"),
    ("os.replace (rename over the record)", "~", "<built-in method posix.replace>"),
    ("instances claimed (Store.claim: the record locked, linked as its marker)", "store.py", "claim"),
    ("os.open (markers, appends, tree walks)", "~", "<built-in method posix.open>"),
    ("open() (record create and read)", "~", "<built-in method io.open>"),
    ("unlink (markers, record, tree walks)", "~", "<built-in method posix.unlink>"),
    ("statx via ctypes (mount_info)", "syscalls.py", "mount_info"),
    ("mkdir", "~", "<built-in method posix.mkdir>"),
    ("chmod", "~", "<built-in method posix.chmod>"),
    ("chown", "~", "<built-in method posix.chown>"),
    ("rmdir", "~", "<built-in method posix.rmdir>"),
    ("mount(2)", "syscalls.py", "mount"),
    ("umount2(2)", "syscalls.py", "umount"),
    ("pluggy hook calls (Registry._call)", "registry.py", "_call"),
    ("subprocess (cp -a)", "subprocess.py", "__init__"),
)


def counts(stats: pstats.Stats, cycles: int) -> list[tuple[str, float, float]]:
    """(label, calls per cycle, cumulative ms per cycle) of ``COUNTED``."""
    rows = []
    raw = stats.stats  # type: ignore[attr-defined]
    for label, suffix, name in COUNTED:
        calls = cum = 0.0
        for (filename, _line, func), (_cc, nc, _tt, ct, _callers) in raw.items():
            if func == name and filename.endswith(suffix):
                calls += nc
                cum += ct
        rows.append((label, calls / cycles, cum * 1000 / cycles))
    return rows


def profile_library(backend: str, cycles: int, work: str) -> None:
    proto = f"{work}/proto"
    prototypes.busybox(proto)
    os.makedirs(f"{work}/base")
    rfs = RootFS(f"{work}/base", backend=backend)
    rfs.remove(rfs.generate(proto))  # probe and warm-up outside the profile
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(cycles):
        rfs.remove(rfs.generate(proto))
    prof.disable()
    report(prof, cycles, f"{backend}: {cycles} generate+remove cycles")


def profile_cli(work: str) -> None:
    from rootfs_core import cli

    proto = f"{work}/proto"
    prototypes.busybox(proto)
    os.makedirs(f"{work}/base")
    os.environ["ROOTFS_BASE_DIR"] = f"{work}/base"
    out = io.StringIO()
    prof = cProfile.Profile()
    saved = sys.stdout
    try:
        sys.stdout = out
        prof.enable()
        cli.main(["generate", proto])
        cli.main(["remove", out.getvalue().strip()])
        prof.disable()
    finally:
        sys.stdout = saved
    report(
        prof, 1, "CLI: generate + remove in one interpreter (imports already paid by this script are missing)"
    )


def _purpose(path: object) -> str:
    """Which of the library's files a path is: the marker, the record, or other."""
    text = os.fsdecode(path) if isinstance(path, str | bytes) else ""
    if f"/{STATE_DIR}/incomplete/" in text:
        return "marker"
    if f"/{STATE_DIR}/records/" in text:
        return "record"
    return "instance"


class Ledger:
    """Exclusive (self) time and calls per label, for the contender being run.

    Wraps functions in place (``os.open``, ``Store.append``, ...); a wrapped
    call inside another is subtracted from the outer one, so the labels add
    up to the time spent in wrapped calls, and the cycle's remainder is the
    Python that runs between them. The wrapper's own work outside its timed
    window lands in its caller's self time; ``calibrate`` measures it per
    call, and ``self_us`` takes it back out.
    """

    def __init__(self) -> None:
        self.books: dict[str, dict[str, list[float]]] = {}  # contender -> label -> [calls, s, children]
        self.top_calls: dict[str, int] = {}  # wrapped calls made from unwrapped code
        self.current: str | None = None
        self.overhead = 0.0  # seconds a counted call adds to its caller
        self._stack: list[list[float]] = []  # [child seconds, child calls] of each open call
        self._fds: dict[int, str] = {}
        self._restore: list[tuple[object, str, object]] = []

    def wrap(self, owner: object, name: str, label: str) -> None:
        original = getattr(owner, name)
        ledger = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if ledger.current is None:
                return original(*args, **kwargs)
            ledger._stack.append([0.0, 0.0])
            began = time.perf_counter()
            result = None
            try:
                result = original(*args, **kwargs)
                return result
            finally:
                elapsed = time.perf_counter() - began
                child_s, child_n = ledger._stack.pop()
                if ledger._stack:
                    ledger._stack[-1][0] += elapsed
                    ledger._stack[-1][1] += 1
                else:
                    ledger.top_calls[ledger.current] = ledger.top_calls.get(ledger.current, 0) + 1
                ledger._add(ledger._label(label, args, result), elapsed - child_s, child_n)

        self._restore.append((owner, name, original))
        setattr(owner, name, wrapper)

    def _label(self, label: str, args: tuple[Any, ...], result: object) -> str:
        if "{path}" in label:
            purpose = _purpose(args[0]) if args else "instance"
            if isinstance(result, int):  # os.open: remember what the fd is for
                self._fds[result] = purpose
            return label.format(path=purpose)
        if "{fd}" in label:
            fd = args[0] if args and isinstance(args[0], int) else -1
            purpose = (
                self._fds.pop(fd, "instance") if label.startswith("close") else self._fds.get(fd, "instance")
            )
            return label.format(fd=purpose)
        return label

    def _add(self, label: str, seconds: float, children: float) -> None:
        assert self.current is not None
        entry = self.books.setdefault(self.current, {}).setdefault(label, [0.0, 0.0, 0.0])
        entry[0] += 1
        entry[1] += seconds
        entry[2] += children

    def self_us(self, contender: str, label: str, cycles: int) -> tuple[float, float]:
        """(calls, self time in us) per cycle, less the overhead of counting its children."""
        calls, seconds, children = self.books.get(contender, {}).get(label, [0.0, 0.0, 0.0])
        return calls / cycles, (seconds - children * self.overhead) * 1e6 / cycles

    def calibrate(self, rounds: int = 2000, fan_out: int = 20) -> None:
        """The time one counted call adds to its caller outside its own window."""

        class Probe:
            @staticmethod
            def leaf(path: str) -> None:
                return None

            @staticmethod
            def parent(calls: int) -> None:
                for _ in range(calls):
                    Probe.leaf("/x")

        self.wrap(Probe, "leaf", "open {path}")
        self.wrap(Probe, "parent", "calibration")
        per_round = []
        for calls in (0, fan_out):
            self.current = "calibration"
            for _ in range(rounds):
                Probe.parent(calls)
            self.current = None
            _, seconds, _ = self.books["calibration"]["calibration"]
            per_round.append(seconds / rounds)
            del self.books["calibration"]
        self.top_calls.pop("calibration", None)
        self.overhead = max(0.0, (per_round[1] - per_round[0]) / fan_out)
        self._restore = self._restore[:-2]

    def restore(self) -> None:
        for owner, name, original in reversed(self._restore):
            setattr(owner, name, original)


def _instrument(ledger: Ledger) -> None:
    for name, label in (
        ("mkdir", "mkdir"),
        ("rmdir", "rmdir"),
        ("chmod", "chmod"),
        ("chown", "chown"),
        ("open", "open {path}"),
        ("unlink", "unlink {path}"),
        ("link", "link (a marker, a record)"),
        ("write", "write {fd}"),
        ("close", "close {fd}"),
        ("fstat", "fstat {fd}"),
        ("scandir", "scandir (opendir)"),
        ("lstat", "lstat/stat/access/readlink (realpath, checks)"),
        ("stat", "lstat/stat/access/readlink (realpath, checks)"),
        ("access", "lstat/stat/access/readlink (realpath, checks)"),
        ("readlink", "lstat/stat/access/readlink (realpath, checks)"),
        ("urandom", "urandom (new id)"),
    ):
        ledger.wrap(os, name, label)
    ledger.wrap(fcntl, "flock", "flock {fd}")
    ledger.wrap(syscalls_module, "mount_info", "statx via ctypes")
    ledger.wrap(LinuxSyscalls, "mount", "mount(2)")
    ledger.wrap(LinuxSyscalls, "umount", "umount2(2)")
    ledger.wrap(rawops._Libc, "mount", "mount(2)")
    ledger.wrap(rawops._Libc, "umount", "umount2(2)")
    ledger.wrap(Store, "claim_new", "record: create, mark and lock (json)")
    ledger.wrap(Store, "read", "record: read (json, validation)")
    ledger.wrap(Store, "append", "journal: append (json, encode)")
    ledger.wrap(Registry, "_call", "pluggy dispatch (Registry._call)")
    for name in ("__init__", "communicate", "wait"):
        ledger.wrap(subprocess.Popen, name, "cp -a (spawn, copy, wait)")


def profile_breakdown(backend: str, cycles: int, work: str) -> None:
    """Library and raw cycles alternating, every system call and journal
    function timed in place: where the gap between them goes, in us per cycle."""
    proto = f"{work}/proto"
    prototypes.busybox(proto)
    os.makedirs(f"{work}/base")
    os.makedirs(f"{work}/raw")
    rfs = RootFS(f"{work}/base", backend=backend)
    raw: RawOverlay | RawQuilt = (
        RawOverlay(f"{work}/raw", proto) if backend == "overlayfs" else RawQuilt(f"{work}/raw", proto)
    )
    rfs.remove(rfs.generate(proto))  # probe and warm-up
    raw.remove(raw.generate())
    plain: dict[str, list[float]] = {"library": [], "raw": []}
    timed: dict[str, list[float]] = {"library": [], "raw": []}
    ledger = Ledger()

    def one(kind: str) -> float:
        began = time.perf_counter()
        if kind == "library":
            rfs.remove(rfs.generate(proto))
        else:
            raw.remove(raw.generate())
        return time.perf_counter() - began

    ledger.calibrate()
    _instrument(ledger)
    try:
        # Rounds alternate all four, so drift hits them alike; when not
        # counting, a wrapper only passes the call on (well under 1 us).
        for _ in range(cycles):
            for kind in ("library", "raw"):
                plain[kind].append(one(kind))
                ledger.current = kind
                timed[kind].append(one(kind))
                ledger.current = None
    finally:
        ledger.restore()

    print(f"== {backend}: where one generate+remove goes, library against raw ({cycles} cycles each)")
    lib_med, raw_med = (statistics.median(plain[k]) * 1e6 for k in ("library", "raw"))
    print(
        f"uncounted cycles: library {lib_med:.0f} us, raw {raw_med:.0f} us (medians): "
        f"gap {lib_med - raw_med:.0f} us, {lib_med / raw_med:.2f}x"
    )
    lib_mean, raw_mean = (statistics.fmean(timed[k]) * 1e6 for k in ("library", "raw"))
    calls = {k: sum(e[0] for e in ledger.books.get(k, {}).values()) / cycles for k in ("library", "raw")}
    print(
        f"counted cycles (means, so the rows add up): library {lib_mean:.0f} us, raw {raw_mean:.0f} us, "
        f"with {calls['library']:.0f} and {calls['raw']:.0f} counted calls; counting costs "
        f"{ledger.overhead * 1e6:.2f} us per call, taken out of each row and out of the total"
    )
    books = {k: ledger.books.get(k, {}) for k in ("library", "raw")}
    rows = []
    for label in set(books["library"]) | set(books["raw"]):
        ln, lus = ledger.self_us("library", label, cycles)
        rn, rus = ledger.self_us("raw", label, cycles)
        rows.append((label, ln, lus, rn, rus))
    rows.sort(key=lambda r: -(r[2] - r[4]))
    print(
        f"{'exclusive time per cycle':<50} {'lib n':>6} {'lib us':>8} {'raw n':>6} {'raw us':>8} "
        f"{'gap us':>8}"
    )
    total = {"library": 0.0, "raw": 0.0}
    for label, ln, lus, rn, rus in rows:
        total["library"] += lus
        total["raw"] += rus
        print(f"{label:<50} {ln:>6.1f} {lus:>8.1f} {rn:>6.1f} {rus:>8.1f} {lus - rus:>8.1f}")
    rest = {
        k: mean - total[k] - (ledger.top_calls.get(k, 0) / cycles + calls[k]) * ledger.overhead * 1e6
        for k, mean in (("library", lib_mean), ("raw", raw_mean))
    }
    print(
        f"{'Python between the calls above':<50} {'':>6} {rest['library']:>8.1f} {'':>6} "
        f"{rest['raw']:>8.1f} {rest['library'] - rest['raw']:>8.1f}"
    )
    corrected = {k: total[k] + rest[k] for k in total}
    print(
        f"{'total, counting taken out':<50} {'':>6} {corrected['library']:>8.1f} {'':>6} "
        f"{corrected['raw']:>8.1f} {corrected['library'] - corrected['raw']:>8.1f}"
    )


def report(prof: cProfile.Profile, cycles: int, title: str) -> None:
    stats = pstats.Stats(prof)
    print(f"== {title}")
    print(f"{'call':<40} {'per cycle':>10} {'ms/cycle':>10}")
    for label, calls, cum in counts(stats, cycles):
        print(f"{label:<40} {calls:>10.1f} {cum:>10.3f}")
    stats.sort_stats("tottime").print_stats(25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("what", choices=("overlayfs", "quilt", "cli", "breakdown"))
    parser.add_argument("--cycles", type=int, default=300)
    parser.add_argument(
        "--backend", choices=("overlayfs", "quilt"), default="overlayfs", help="for breakdown"
    )
    args = parser.parse_args()
    work = f"/tmp/rootfs-bench-{os.getpid()}"
    os.mkdir(work, 0o700)
    os.environ["ROOTFS_CACHE"] = f"{work}/probe-cache"
    os.environ["ROOTFS_CONFIG"] = f"{work}/no-config.toml"
    try:
        if args.what == "cli":
            profile_cli(work)
        elif args.what == "breakdown":
            profile_breakdown(args.backend, args.cycles, work)
        else:
            profile_library(args.what, args.cycles, work)
    finally:
        left = hygiene.unmount_all_below(work)
        clean = not left and hygiene.delete_tree(work)
        if not clean:
            print(f"profile: could not clean up {work}: still mounted {left}", file=sys.stderr)
    return 0 if clean else 3


if __name__ == "__main__":
    sys.exit(main())
