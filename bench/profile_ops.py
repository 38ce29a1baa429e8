"""Where the library's time goes: cProfile of generate+remove cycles, and the
calls that docs/performance.md counts per cycle.

    python bench/profile_ops.py overlayfs          # 300 cycles, top functions by own time
    python bench/profile_ops.py quilt --cycles 40
    python bench/profile_ops.py cli                # one `rootfs generate` + `remove`, in-process

Counts per cycle (record writes, statx, mkdir, ...) come from the profile, so
they hold on any machine; the times are inflated by cProfile and only say
which share is which. Works in its own /tmp/rootfs-bench-<pid>/ and leaves
nothing behind (the same checks as run.py).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys

import hygiene
import prototypes

from rootfs_core import RootFS

# (label, file suffix, function name) of the calls worth counting per cycle.
COUNTED = (
    ("record writes (Store.write)", "store.py", "write"),
    ("os.replace (rename over the record)", "~", "<built-in method posix.replace>"),
    ("open()", "~", "<built-in method io.open>"),
    ("statx via ctypes (mount_info)", "syscalls.py", "mount_info"),
    ("mkdir", "~", "<built-in method posix.mkdir>"),
    ("chmod", "~", "<built-in method posix.chmod>"),
    ("rmdir", "~", "<built-in method posix.rmdir>"),
    ("mount(2)", "syscalls.py", "mount"),
    ("umount2(2)", "syscalls.py", "umount"),
    ("pluggy hook calls (Registry.call)", "registry.py", "call"),
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


def report(prof: cProfile.Profile, cycles: int, title: str) -> None:
    stats = pstats.Stats(prof)
    print(f"== {title}")
    print(f"{'call':<40} {'per cycle':>10} {'ms/cycle':>10}")
    for label, calls, cum in counts(stats, cycles):
        print(f"{label:<40} {calls:>10.1f} {cum:>10.3f}")
    stats.sort_stats("tottime").print_stats(25)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("what", choices=("overlayfs", "quilt", "cli"))
    parser.add_argument("--cycles", type=int, default=300)
    args = parser.parse_args()
    work = f"/tmp/rootfs-bench-{os.getpid()}"
    os.mkdir(work, 0o700)
    os.environ["ROOTFS_PROBE_CACHE"] = f"{work}/probe-cache"
    os.environ["ROOTFS_CONFIG"] = f"{work}/no-config.toml"
    try:
        if args.what == "cli":
            profile_cli(work)
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
