"""What the cross-namespace checks of remove cost, beside 0, 100 and 1,000
other mount namespaces.

    python bench/namespaces.py                 # 0, 100 and 1,000 neighbours
    python bench/namespaces.py --counts 0 100  # fewer
    python bench/namespaces.py --json

A remove looks for copies of the instance's mounts in every other mount
namespace (``rootfs_core.namespaces``): it lists ``/proc``, reads each
process's namespace link, and one ``mountinfo`` per namespace. Its cost
grows with the number of processes and namespaces on the host, not with
the number of instances. Each neighbour here is a ``sleep`` in a private
mount namespace of its own, made before the instances (as the services of
a host are), so it holds a copy of the base directory's mount but of no
instance: the scan reads it and finds nothing, the common case.

For each count: the median of a library overlay generate+remove cycle,
interleaved with the same cycle made with the raw syscalls, and the scan
alone; ratios are to the raw cycle and to the count of 0 in the same run.
Nothing is asserted; everything made is removed, mount-safely.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import hygiene
from rawops import RawOverlay

from rootfs_core import RootFS, namespaces
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


def measure(base: str, prototype: str, reps: int) -> dict[str, float]:
    rfs = RootFS(base, backend="overlayfs")
    raw = RawOverlay(base, prototype)
    rfs.remove(rfs.generate(prototype))  # warm: probe, base dir set-up
    lib_times, raw_times, scan_times = [], [], []
    # the signature of a quilt-sized instance: one id, eight mount points
    signature = namespaces.Signature(
        [b"0123456789ab"], [], [os.path.join(base, "0123456789ab", "root", d) for d in "abcdefgh"]
    )
    for _ in range(reps):
        started = time.perf_counter()
        rfs.remove(rfs.generate(prototype))
        lib_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        raw.remove(raw.generate())
        raw_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        namespaces.scan(signature, mounted_here=True)
        scan_times.append(time.perf_counter() - started)
    return {
        "library_ms": statistics.median(lib_times) * 1e3,
        "raw_ms": statistics.median(raw_times) * 1e3,
        "scan_ms": statistics.median(scan_times) * 1e3,
    }


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
        row["library_vs_raw"] = row["library_ms"] / row["raw_ms"]
        row["library_vs_no_neighbours"] = row["library_ms"] / zero["library_ms"]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print("namespaces  library ms  raw ms  scan ms  lib/raw  lib/lib0")
    for row in rows:
        print(
            f"{row['namespaces']:>10}  {row['library_ms']:>10.3f}  {row['raw_ms']:>6.3f}  "
            f"{row['scan_ms']:>7.3f}  {row['library_vs_raw']:>7.2f}  {row['library_vs_no_neighbours']:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
