"""What the tests compare: the mount table, and a prototype's exact state."""

from __future__ import annotations

import dataclasses
import os
import time

from rootfs_core.checksum import tree_checksum as tree_checksum  # where tests have always found it
from rootfs_core.mounttable import mount_points, mounts_below

__all__ = [
    "ProcessState",
    "command_lines",
    "instance_mounts",
    "is_gone",
    "mount_options",
    "mount_points",
    "mounts_below",
    "open_errno",
    "process_state",
    "tree_checksum",
]


def instance_mounts(base: str) -> list[str]:
    """The mount points below base directory ``base``, without the private
    mount of the base directory itself (``rootfs_core.basedir``), which
    stays: what is left of instances."""
    return [p for p in mounts_below(base) if p != base]


def mount_options(point: str) -> set[str]:
    """The per-mount options of mount point ``point`` (the topmost mount
    there), as ``/proc/self/mountinfo`` shows them."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        found = [line.split()[5] for line in fh if line.split()[4] == point]
    assert found, f"{point} is not a mount point"
    return set(found[-1].split(","))


def open_errno(path: str) -> int | None:
    """The errno of opening ``path`` for reading and writing, None if it
    opened (then it is closed at once, so nothing is left busy)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        return exc.errno
    os.close(fd)
    return None


def command_lines() -> dict[int, list[bytes]]:
    """Every process's command line, by pid (those that end meanwhile left
    out; one being exec'ed may show an empty one): to find the helpers and
    daemons a test expects alive, or gone."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    found[int(name)] = fh.read().split(b"\0")
            except OSError:
                continue
    return found


@dataclasses.dataclass(frozen=True)
class ProcessState:
    """What /proc/PID/stat says of a process that tests look at."""

    state: str  # R, S, D, Z (a zombie: dead, not yet reaped), ...
    parent: int
    nice: int


def process_state(pid: int) -> ProcessState | None:
    """The state of process ``pid``, None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()  # after the command's name
    except OSError:
        return None
    return ProcessState(fields[0].decode(), int(fields[1]), int(fields[16]))


def is_gone(pid: int, within: float) -> bool:
    """Whether ``pid`` is gone (or dead, a zombie) within ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        found = process_state(pid)
        if found is None or found.state in ("Z", "X"):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
