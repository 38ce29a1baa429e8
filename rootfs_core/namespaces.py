"""Who else holds an instance's mounts: the other mount namespaces.

A mount namespace made after a generate (``unshare -m``, a container
runtime, a systemd service with ``PrivateTmp``) holds private *copies* of
every mount rootfs made. Unmounting ours leaves the copies alive, and the
writable data under them still in use: deleting it then pulls files out
from under a running container. The kernel's own busy test only sees the
caller's namespace, so this module looks at the others, through ``/proc``:

- ``scan`` finds the namespaces holding a copy of an instance's mounts, by
  reading one ``mountinfo`` per namespace and looking for the instance's
  *needles*: its id (in the mount point of a copy, in the root of a bind of
  one of its directories, in an overlay's ``upperdir=``) and the device
  numbers of the filesystems only it has (an overlay, a FUSE mount), which
  survive a ``pivot_root`` that renames every mount point.
- ``Copies.holders`` names the processes of those namespaces whose root,
  working directory, open files or mappings lie on one of the copies
  (compared by mount id, which is unique across namespaces), as
  ``fuser -m`` would if it could see across namespaces.

Only processes the caller may inspect are seen: without privilege, other
users' namespaces are invisible, and ``Copies.complete`` says so.
"""

from __future__ import annotations

import dataclasses
import os

from rootfs_core.syscalls import mount_id_of


@dataclasses.dataclass
class Copies:
    """Copies of an instance's mounts in other mount namespaces."""

    # namespace -> (mount ids of the copies in it, pids of the namespace)
    found: dict[str, tuple[set[int], list[int]]]
    # False when some process's namespace could not be read (no privilege)
    complete: bool

    def __bool__(self) -> bool:
        return bool(self.found)

    def holders(self) -> list[str]:
        """``"pid (command)"`` of every process using a copy."""
        users = []
        for mount_ids, pids in self.found.values():
            for pid in pids:
                if _uses(pid, mount_ids):
                    users.append(f"{pid} ({_command(pid)})")
        return users

    def describe(self) -> str:
        """The namespaces holding copies, for a message a person reads."""
        parts = []
        for namespace, (_, pids) in sorted(self.found.items()):
            shown = ", ".join(f"{pid} ({_command(pid)})" for pid in pids[:3])
            more = f" and {len(pids) - 3} more" if len(pids) > 3 else ""
            parts.append(f"{namespace} (processes {shown}{more})")
        return "; ".join(parts)


def scan(needles: list[bytes]) -> Copies:
    """The namespaces other than the caller's that hold a mount matching one
    of ``needles`` (see the module's docstring)."""
    own = os.readlink("/proc/self/ns/mnt")
    by_namespace: dict[str, list[int]] = {}
    complete = True
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            namespace = os.readlink(f"/proc/{name}/ns/mnt")
        except FileNotFoundError:
            continue  # exited meanwhile
        except PermissionError:
            complete = False
            continue
        except OSError:
            continue  # a kernel thread, or a process exiting
        if namespace != own:
            by_namespace.setdefault(namespace, []).append(int(name))
    found: dict[str, tuple[set[int], list[int]]] = {}
    for namespace, pids in by_namespace.items():
        mount_ids = _matching_mounts(pids, needles)
        if mount_ids is None:
            complete = False
        elif mount_ids:
            found[namespace] = (mount_ids, pids)
    return Copies(found, complete)


def _matching_mounts(pids: list[int], needles: list[bytes]) -> set[int] | None:
    """Mount ids in the namespace of ``pids`` whose mountinfo line holds a
    needle, with the mount a matched bind sits on (a quilt's root, which is
    a bind of the prototype and names nothing of the instance itself).
    None if no process of the namespace could be read."""
    for pid in pids:
        try:
            with open(f"/proc/{pid}/mountinfo", "rb") as fh:
                table = fh.read()
        except OSError:
            continue
        if not any(needle in table for needle in needles):
            return set()
        mount_ids: set[int] = set()
        for line in table.splitlines():
            if not any(needle in line for needle in needles):
                continue
            fields = line.split(b" ", 4)
            mount_ids.add(int(fields[0]))
            if any(needle in fields[3] for needle in needles):
                mount_ids.add(int(fields[1]))  # the mount this bind of ours lies on
        return mount_ids
    return None


def _uses(pid: int, mount_ids: set[int]) -> bool:
    """Whether process ``pid`` has its root, working directory, an open file
    or a mapped file on one of ``mount_ids``."""
    proc = f"/proc/{pid}"
    links = [f"{proc}/root", f"{proc}/cwd"]
    for directory in ("fd", "map_files"):
        try:
            links += [f"{proc}/{directory}/{entry}" for entry in os.listdir(f"{proc}/{directory}")]
        except OSError:
            pass
    for link in links:
        try:
            if mount_id_of(link) in mount_ids:
                return True
        except OSError:
            continue  # closed or gone meanwhile, or a pipe or socket
    return False


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return "?"
