"""What the cross-namespace checks of remove cost, beside 0, 100 and 1,000
other mount namespaces.

    python bench/namespaces.py                 # 0, 100 and 1,000 neighbours
    python bench/namespaces.py --counts 0 100  # fewer
    python bench/namespaces.py --json

A remove looks for copies of the instance's mounts in every other mount
namespace (``rootfs_core.namespaces``), twice. Where the kernel lists the
namespaces (Linux 6.12, as root) it asks each, in one ``listmount``,
whether it has a mount newer than the instance's oldest, and looks only
at those that do; elsewhere it lists ``/proc`` and reads each process's
namespace link (the *walk*, which is how every remove scanned before).
Either way its cost grows with the number of namespaces on the host, not
with the number of instances. Each neighbour here is a ``sleep`` in a
private mount namespace of its own, made before the instances (as the
services of a host are), so it holds a copy of the base directory's
mount but of no instance: the scan finds nothing, the common case.

For each count, the medians of interleaved cycles, so that this machine's
drifting load weighs on all alike: a library overlay generate+remove as
it is (``library``), the same with the walk (``walk``), the same with no
scan at all (``unscanned``: what the cycle costs beside no namespace,
less its two scans of none), and the raw syscalls' cycle; and one scan
for an instance's copies, both ways (an instance made at the start: any
namespace that mounts something meanwhile, as other jobs on a shared
machine do, is looked at more closely). Ratios: ``lib/unsc`` and
``walk/unsc``, each cycle to its unscanned twin measured beside it (the
cost of the namespaces, paired); ``lib/lib0``, to the library cycle
beside 0 namespaces (the issue's ratio, across load drift); ``lib/raw``.
Nothing is asserted; everything made is removed, mount-safely.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from unittest import mock

import hygiene
from rawops import RawOverlay

from rootfs_core import RootFS, namespaces, teardown
from rootfs_core.testing.prototypes import make_tiny_prototype


def neighbours(count: int) -> list[subprocess.Popen[bytes]]:
    """``count`` processes, each in a private mount namespace of its own."""
    procs = []
    for _ in range(count):
        procs.append(
            subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sleep", "3600"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
            )
        )
    own = os.readlink("/proc/self/ns/mnt")
    deadline = time.monotonic() + 60
    for proc in procs:  # wait until each has its own namespace
        while time.monotonic() < deadline:
            try:
                if os.readlink(f"/proc/{proc.pid}/ns/mnt") != own:
                    break
            except OSError:
                pass
            time.sleep(0.001)
    return procs


@contextlib.contextmanager
def scanning(way: str) -> Iterator[None]:
    """Removes scan other namespaces ``way``: "kernel" (as they do here),
    "walk" (as where the kernel cannot list them) or "none" (not at all)."""
    if way == "walk":
        with mock.patch.object(namespaces, "_sees_every_namespace", return_value=False):
            yield
    elif way == "none":
        with mock.patch.object(namespaces, "scan", return_value=namespaces.Copies({}, True)):
            yield
    else:
        yield


def measure(base: str, prototype: str, reps: int) -> dict[str, float]:
    rfs = RootFS(base, backend="overlayfs")
    raw = RawOverlay(base, prototype)
    rfs.remove(rfs.generate(prototype))  # warm: probe, base dir set-up
    cycles: dict[str, list[float]] = {"library": [], "walk": [], "unscanned": [], "raw": []}
    scans: dict[str, list[float]] = {"scan": [], "walk_scan": []}
    root = rfs.generate(prototype)  # the instance the scans alone look for copies of
    try:
        signature = teardown.signature(os.path.dirname(root), [], prototype, rfs.syscalls)
        walking = dataclasses.replace(signature, oldest=None)  # no oldest mount: the /proc walk
        for _ in range(reps):
            for name, way in (("library", "kernel"), ("walk", "walk"), ("unscanned", "none")):
                with scanning(way):
                    started = time.perf_counter()
                    rfs.remove(rfs.generate(prototype))
                    cycles[name].append(time.perf_counter() - started)
            started = time.perf_counter()
            raw.remove(raw.generate())
            cycles["raw"].append(time.perf_counter() - started)
            for name, scanned in (("scan", signature), ("walk_scan", walking)):
                started = time.perf_counter()
                namespaces.scan(scanned, mounted_here=True)
                scans[name].append(time.perf_counter() - started)
    finally:
        rfs.remove(root)
    return {f"{name}_ms": statistics.median(times) * 1e3 for name, times in {**cycles, **scans}.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[0, 100, 1000])
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (real mounts)", file=sys.stderr)
        return 1
    os.environ["ROOTFS_CACHE"] = ""
    work = tempfile.mkdtemp(prefix="rootfs-bench-ns-")
    rows = []
    try:
        prototype = make_tiny_prototype(os.path.join(work, "prototype"))
        base = os.path.join(work, "base")
        os.mkdir(base, 0o700)
        for count in args.counts:
            procs = neighbours(count)
            try:
                rows.append({"namespaces": count, **measure(base, prototype, args.reps)})
            finally:
                for proc in procs:
                    proc.kill()
                for proc in procs:
                    proc.wait()
    finally:
        left = hygiene.unmount_all_below(work)
        clean = hygiene.delete_tree(work)
    if not clean:
        print(f"left {work} (mounts below it: {left})", file=sys.stderr)
        return 3
    zero = rows[0]
    for row in rows:
        row["library_vs_unscanned"] = row["library_ms"] / row["unscanned_ms"]
        row["walk_vs_unscanned"] = row["walk_ms"] / row["unscanned_ms"]
        row["library_vs_no_neighbours"] = row["library_ms"] / zero["library_ms"]
        row["library_vs_raw"] = row["library_ms"] / row["raw_ms"]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(
        "namespaces  library ms  walk ms  unscanned ms  raw ms  scan ms  walk scan ms"
        "  lib/unsc  walk/unsc  lib/lib0  lib/raw"
    )
    for row in rows:
        print(
            f"{row['namespaces']:>10}  {row['library_ms']:>10.3f}  {row['walk_ms']:>7.3f}  "
            f"{row['unscanned_ms']:>12.3f}  {row['raw_ms']:>6.3f}  {row['scan_ms']:>7.3f}  "
            f"{row['walk_scan_ms']:>12.3f}  {row['library_vs_unscanned']:>8.2f}  "
            f"{row['walk_vs_unscanned']:>9.2f}  {row['library_vs_no_neighbours']:>8.2f}  "
            f"{row['library_vs_raw']:>7.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
