"""Who else holds an instance's mounts: the other mount namespaces.

A mount namespace made after a generate (``unshare -m``, a container
runtime, a systemd service with ``PrivateTmp``) holds private *copies* of
every mount rootfs made. Unmounting ours leaves the copies alive, and the
writable data under them still in use: deleting it then pulls files out
from under a running container. The kernel's own busy test only sees the
caller's namespace, so this module looks at the others, through ``/proc``:

- ``scan`` finds the namespaces holding a copy of an instance's mounts.
  A namespace whose root is the caller's (``unshare -m``, a service with
  ``PrivateTmp``) has its copies at the same paths: a ``statx`` of each of
  the instance's mount points through ``/proc/PID/root`` says whether it
  is a mount there, and gives the copy's mount id. One with a root of its
  own (a container after ``pivot_root``, which renames every mount point)
  has its ``mountinfo`` read, looking for the instance's *needles*: its id
  (in the root of a bind of one of its directories, in an overlay's
  ``upperdir=``) and, while the instance is still mounted here, the device
  numbers of the filesystems only it has (an overlay, a FUSE mount). A
  device number is never used once ours are unmounted: the kernel hands
  it to the next filesystem mounted anywhere.
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

from rootfs_core.syscalls import mount_id_of, mount_info


@dataclasses.dataclass(frozen=True)
class Signature:
    """What marks an instance's mounts in another namespace."""

    needles: list[bytes]  # its id: in a copy's mountinfo line
    devices: list[bytes]  # b" MAJOR:MINOR " of its own filesystems, while mounted here
    targets: list[str]  # its mount points, absolute


@dataclasses.dataclass
class Copies:
    """Copies of an instance's mounts in other mount namespaces."""

    # namespace -> (mount ids of the copies in it, pids of the namespace)
    found: dict[str, tuple[set[int], list[int]]]
    # False when some process's namespace could not be read (no privilege)
    complete: bool
    # namespaces looked at and found without a copy: a copy of a private
    # mount appears only in a namespace made after it, so they need no
    # second look
    clean: frozenset[str] = frozenset()

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

    def alive(self) -> Copies:
        """The namespaces of these copies that still have a process."""
        found = {}
        for namespace, (mount_ids, pids) in self.found.items():
            living = [pid for pid in pids if _namespace_of(pid) == namespace]
            if living:
                found[namespace] = (mount_ids, living)
        return Copies(found, self.complete, self.clean)

    def describe(self) -> str:
        """The namespaces holding copies, for a message a person reads."""
        parts = []
        for namespace, (_, pids) in sorted(self.found.items()):
            shown = ", ".join(f"{pid} ({_command(pid)})" for pid in pids[:3])
            more = f" and {len(pids) - 3} more" if len(pids) > 3 else ""
            parts.append(f"{namespace} (processes {shown}{more})")
        return "; ".join(parts)


def scan(signature: Signature, *, mounted_here: bool, clean: frozenset[str] = frozenset()) -> Copies:
    """The namespaces other than the caller's that hold a copy of a mount of
    the instance (see the module's docstring); ``mounted_here`` says whether
    its mounts are still mounted in the caller's namespace (only then do
    its device numbers identify it); namespaces in ``clean`` were found
    without a copy by an earlier scan and are not looked at again."""
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
        if namespace != own and namespace not in clean:
            by_namespace.setdefault(namespace, []).append(int(name))
    if not by_namespace:
        return Copies({}, complete, clean)
    root = os.stat("/proc/self/root")
    needles = signature.needles + (signature.devices if mounted_here else [])
    found: dict[str, tuple[set[int], list[int]]] = {}
    checked = set(clean)
    for namespace, pids in by_namespace.items():
        mount_ids = _copies_in(pids, (root.st_dev, root.st_ino), signature.targets, needles)
        if mount_ids is None:
            complete = False
        elif mount_ids:
            found[namespace] = (mount_ids, pids)
        else:
            checked.add(namespace)
    return Copies(found, complete, frozenset(checked))


def _copies_in(
    pids: list[int], root: tuple[int, int], targets: list[str], needles: list[bytes]
) -> set[int] | None:
    """Mount ids of the copies in the namespace of ``pids`` (see ``scan``);
    None if no process of the namespace could be read for lack of
    privilege (one that exited meanwhile has no copy to care about)."""
    denied = False
    for pid in pids:
        try:
            st = os.stat(f"/proc/{pid}/root")
        except PermissionError:
            denied = True
            continue
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == root:
            return _copies_at_the_same_paths(pid, targets)
        copies = _matching_mounts(pid, needles)
        if copies is not None:
            return copies
        denied = True
    return None if denied else set()


def _copies_at_the_same_paths(pid: int, targets: list[str]) -> set[int]:
    """Mount ids of the instance's mount points that are mounts in the
    namespace of ``pid``, whose root is the caller's. The first mount point
    is asked first, alone: a namespace holds a copy of every mount of the
    instance or of none (copies are made of the whole tree at once)."""
    found: set[int] = set()
    for index, target in enumerate(targets):
        try:
            mnt_id, is_root = mount_info(f"/proc/{pid}/root{target}")
        except OSError:
            is_root = False
        if is_root:
            found.add(mnt_id)
        elif index == 0:
            return found
    return found


def _matching_mounts(pid: int, needles: list[bytes]) -> set[int] | None:
    """Mount ids in the namespace of ``pid`` whose mountinfo line holds a
    needle, with the mount a matched bind sits on (a quilt's root, which is
    a bind of the prototype and names nothing of the instance itself).
    None if the table could not be read."""
    try:
        with open(f"/proc/{pid}/mountinfo", "rb") as fh:
            table = fh.read()
    except OSError:
        return None
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


def _namespace_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
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
