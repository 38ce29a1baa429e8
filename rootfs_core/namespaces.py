"""Who else holds an instance's mounts: the other mount namespaces.

A mount namespace made after a generate (``unshare -m``, a container
runtime, a systemd service with ``PrivateTmp``) holds private *copies* of
every mount rootfs made. Unmounting ours leaves the copies alive, and the
writable data under them still in use: deleting it then pulls files out
from under a running container. The kernel's own busy test only sees the
caller's namespace, so this module looks at the others:

- ``scan`` finds the namespaces holding a copy of an instance's mounts.
  First it lets the kernel rule out, without reading anything, every
  namespace that cannot hold one (below). Of each that remains, the kernel
  describes the mounts newer than the instance's (``statmount``: the
  device, root, mount point and options a ``mountinfo`` line shows, and no
  process of the namespace is needed, nor can a chrooted one hide any),
  and a copy is one that names the instance: by its *needles*, its id (in
  a copy's mount point, in the root of a bind of one of its directories,
  in an overlay's ``upperdir=``) and, while the instance is still mounted
  here, the device numbers of the filesystems only it has (an overlay, a
  FUSE mount). A device number is never used once ours are unmounted: the
  kernel hands it to the next filesystem mounted anywhere. Where the
  kernel cannot rule namespaces out or describe their mounts, each is
  looked at through ``/proc``: one whose root is the caller's
  (``unshare -m``, a service with ``PrivateTmp``) has its copies at the
  same paths (a ``statx`` of each of the instance's mount points through
  ``/proc/PID/root`` says whether it is a mount there, and gives the
  copy's mount id); one with a root of its own (a container after
  ``pivot_root``, which renames every mount point) has its ``mountinfo``
  searched for the needles.
- ``Copies.holders`` names the processes of those namespaces whose root,
  working directory, open files or mappings lie on one of the copies
  (compared by mount id, which is unique across namespaces), as
  ``fuser -m`` would if it could see across namespaces.

Ruling namespaces out. Every copy of a mount, however it came to be (a
namespace cloned after the mount, a bind of it, a copy propagated or
moved into a namespace made before it, as ``machinectl bind`` does with
``open_tree`` and ``move_mount``), is a new mount, and the kernel numbers
mounts with 64-bit ids that only grow and are never reused (``statx``'s
``STATX_MNT_ID_UNIQUE``, Linux 6.8). So a namespace none of whose mounts
is newer than the instance's oldest mount (``Signature.oldest``) holds no
copy of any of them; ``listmount(2)`` answers that for a namespace in one
call, by the namespace's id (6.11), and the kernel lists the namespaces
themselves, with their ids, to a caller with ``CAP_SYS_ADMIN`` in the
initial user namespace (``NS_MNT_GET_NEXT``/``NS_MNT_GET_PREV`` on a
namespace's file, 6.12). Beside namespaces made before the instance (a
host's services, containers that mounted nothing since), a scan then
reads no mount table and looks at no process: it costs an ``ioctl``, a
``close`` and a ``listmount`` per namespace. ``/proc`` is walked only to
find the processes of namespaces holding a copy (which of them use it).
Where the kernel cannot do this (an older one, without
privilege, or an instance no longer mounted here, whose oldest mount is
not known), every other process's namespace is looked at. Relying on the
base directory being private instead (only namespaces cloned after a
generate get copies) would miss a copy bound or moved into an older
namespace, at a path of its own: the mount ids do not, and the mount
table names it.

Only processes the caller may inspect are seen: without privilege, other
users' namespaces are invisible, and ``Copies.complete`` says so.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import fcntl
import functools
import os
import struct
from collections.abc import Callable

from rootfs_core.syscalls import (
    _AT_FDCWD,
    _AT_SYMLINK_NOFOLLOW,
    _STATX_ATTR_MOUNT_ROOT,
    _STATX_SIZE,
    _lib,
    mount_id_of,
    mount_info,
)

_STATX_MNT_ID_UNIQUE = 0x4000
# listmount(2) and statmount(2) (the same numbers on every architecture)
# take a struct mnt_id_req: size, spare, mount id, param, namespace id.
_NR_STATMOUNT, _NR_LISTMOUNT = 457, 458
_MNT_ID_REQ = struct.Struct("<IIQQQ")
_U64 = struct.Struct("<Q")  # its param and namespace id fields
_PARAM_AT, _NS_ID_AT = 16, 24
_LSMT_ROOT = 2**64 - 1  # listmount: every mount of the namespace
_CHUNK = 64  # mount ids listmount is asked for at a time
# struct statmount: what it fills (mask), then fields at fixed offsets and
# strings after its 512 bytes (a field holds one's offset there).
_STATMOUNT_SB_BASIC, _STATMOUNT_MNT_BASIC, _STATMOUNT_MNT_ROOT = 0x1, 0x2, 0x8
_STATMOUNT_MNT_POINT, _STATMOUNT_MNT_OPTS = 0x10, 0x80  # no options: not filled
_STATMOUNT_NEEDED = _STATMOUNT_SB_BASIC | _STATMOUNT_MNT_BASIC | _STATMOUNT_MNT_ROOT | _STATMOUNT_MNT_POINT
_STATMOUNT_ASKED = _STATMOUNT_NEEDED | _STATMOUNT_MNT_OPTS
_STATMOUNT_SIZE = 65536  # an overlay of hundreds of layers has long options
_STATMOUNT_STRINGS = 512
_STATMOUNT_HEAD = struct.Struct("<QII")  # mask, sb_dev_major, sb_dev_minor (at 8)
_STATMOUNT_PARENT = struct.Struct("<Q")  # mnt_parent_id (at 48)
_STATMOUNT_OLD_IDS = struct.Struct("<II")  # mnt_id_old, mnt_parent_id_old (at 56)
_STATMOUNT_PATHS = struct.Struct("<II")  # mnt_root, mnt_point (at 104)
_STATMOUNT_OPTIONS = struct.Struct("<I")  # mnt_opts (at 4)
# ioctls on a mount namespace's file that open the next or previous
# namespace (by id) and fill a struct mnt_ns_info: size, mounts, id.
_NS_INFO_SIZE = 16
_NS_INFO_ID_AT = 8
_NS_MNT_GET_NEXT = (2 << 30) | (_NS_INFO_SIZE << 16) | (0xB7 << 8) | 11
_NS_MNT_GET_PREV = (2 << 30) | (_NS_INFO_SIZE << 16) | (0xB7 << 8) | 12
_INITIAL_USER_NAMESPACE = "user:[4026531837]"  # its inode number is fixed
# capget(2): a header (version, pid 0 for ourselves), then two sets of
# (effective, permitted, inheritable) masks.
_CAP_HEADER = struct.Struct("<Ii")
_CAP_SETS = struct.Struct("<III")
_CAP_VERSION_3 = 0x20080522
_CAP_SYS_ADMIN = 21

# A namespace, as ``Copies.clean`` remembers it: by its id where the kernel
# lists namespaces (64-bit, never reused), else by its /proc link's name.
Namespace = int | str


@dataclasses.dataclass(frozen=True)
class Signature:
    """What marks an instance's mounts in another namespace."""

    needles: list[bytes]  # its id: in a copy's mountinfo line
    devices: list[bytes]  # b" MAJOR:MINOR " of its own filesystems, while mounted here
    targets: list[str]  # its mount points, absolute
    oldest: int | None = None  # see ``oldest_mount``: every copy is newer


@dataclasses.dataclass
class Copies:
    """Copies of an instance's mounts in other mount namespaces."""

    # namespace -> (mount ids of the copies in it, pids of the namespace)
    found: dict[str, tuple[set[int], list[int]]]
    # False when some process's namespace could not be read (no privilege)
    complete: bool
    # namespaces looked at and found without a copy: the second look, once
    # ours are unmounted, moments later, skips them (a namespace made
    # meanwhile is not among them)
    clean: frozenset[Namespace] = frozenset()

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


def oldest_mount(targets: list[str]) -> int | None:
    """The unique id of the oldest of the mounts at ``targets`` (an
    instance's, mounted here), for ``Signature.oldest``: any copy of any of
    them has a larger one. None where the kernel has no unique mount ids
    (before Linux 6.8), where a target is not a mount here, or where another
    mount is stacked on one of ours (a target's top mount must sit on the
    mount holding the directory it is mounted on): the newer mount's id
    would hide copies of ours made before it."""
    oldest = None
    for target in targets:
        top = _unique_mount_id(target)
        below = _unique_mount_id(os.path.dirname(target))
        if top is None or below is None or not top[1] or _parent_of(top[0]) != below[0]:
            return None
        oldest = top[0] if oldest is None else min(oldest, top[0])
    return oldest


def scan(signature: Signature, *, mounted_here: bool, clean: frozenset[Namespace] = frozenset()) -> Copies:
    """The namespaces other than the caller's that hold a copy of a mount of
    the instance (see the module's docstring); ``mounted_here`` says whether
    its mounts are still mounted in the caller's namespace (only then do
    its device numbers identify it); namespaces in ``clean`` were found
    without a copy by an earlier scan and are not looked at again."""
    checked: set[Namespace] = set(clean)
    needles = signature.needles + (signature.devices if mounted_here else [])
    # Where the kernel lists namespaces, only those it cannot rule out are
    # looked at through their processes (name -> id), most for who uses the
    # copies it found (name -> mount ids).
    candidates: dict[str, int] | None = None
    known: dict[str, set[int]] = {}
    left = None if signature.oldest is None else _left_by_the_kernel(signature.oldest, needles, clean)
    if left is not None:
        candidates, known, without = left
        checked |= without
        if not candidates:
            return Copies({}, True, frozenset(checked))
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
        if namespace == own or namespace in clean:
            continue
        if candidates is None or namespace in candidates:
            by_namespace.setdefault(namespace, []).append(int(name))
    if not by_namespace:
        return Copies({}, complete, frozenset(checked))
    root = os.stat("/proc/self/root")
    found: dict[str, tuple[set[int], list[int]]] = {}
    for namespace, pids in by_namespace.items():
        if namespace in known:
            found[namespace] = (known[namespace], pids)
            continue
        mount_ids = _copies_in(pids, (root.st_dev, root.st_ino), signature.targets, needles)
        if mount_ids is None:
            complete = False
        elif mount_ids:
            found[namespace] = (mount_ids, pids)
        else:
            checked.add(namespace if candidates is None else candidates[namespace])
    return Copies(found, complete, frozenset(checked))


def _left_by_the_kernel(
    oldest: int, needles: list[bytes], clean: frozenset[Namespace]
) -> tuple[dict[str, int], dict[str, set[int]], set[Namespace]] | None:
    """What the kernel cannot rule out (see the module's docstring): the
    other mount namespaces to look at through their processes, by their
    /proc link's name, with their ids (those with copies, to find who uses
    them, and those whose newer mounts it could not describe); the copies
    it found (mount ids, by name); and the ids of the namespaces ruled out
    (``clean``'s with them). None where the kernel does not list every
    namespace to this process."""
    listed = _namespaces_with_newer_mounts(oldest, clean)
    if listed is None:
        return None
    newer, without = listed
    left: dict[str, int] = {}
    known: dict[str, set[int]] = {}
    for name, (namespace, mounts) in newer.items():
        copies = None if mounts is None else _copies_among(namespace, mounts, needles)
        if copies == set():
            without.add(namespace)
            continue
        left[name] = namespace
        if copies:
            known[name] = copies
    return left, known, without


def _namespaces_with_newer_mounts(
    oldest: int, clean: frozenset[Namespace]
) -> tuple[dict[str, tuple[int, list[int] | None]], set[Namespace]] | None:
    """The other mount namespaces with a mount newer than ``oldest`` (a
    unique mount id), by their /proc link's name: their ids, with the
    unique ids of those mounts (None if the kernel cannot list them); and
    the ids of those without one (``clean``'s are not asked again). None
    where the kernel does not list every namespace to this process. Per
    namespace without: three system calls, and next to no Python."""
    if not _sees_every_namespace():
        return None
    newer: dict[str, tuple[int, list[int] | None]] = {}
    without: set[Namespace] = set()
    newer_in = _MountsAfter(oldest).newer_in
    ioctl, close, unpack = fcntl.ioctl, os.close, _U64.unpack_from  # the loop's, looked up once
    info = bytearray(_NS_INFO_SIZE)
    own = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        for request in (_NS_MNT_GET_PREV, _NS_MNT_GET_NEXT):
            cursor = os.dup(own)
            try:
                while True:
                    try:
                        following = ioctl(cursor, request, info)
                    except OSError as exc:
                        if exc.errno == errno.ENOENT:
                            break  # the end of the list
                        return None  # no such ioctl (before 6.12), or not allowed
                    close(cursor)
                    cursor = following
                    namespace = unpack(info, _NS_INFO_ID_AT)[0]
                    mounts = [] if namespace in clean else newer_in(namespace)
                    if mounts == []:
                        without.add(namespace)
                    else:
                        newer[f"mnt:[{os.fstat(cursor).st_ino}]"] = (namespace, mounts)
            finally:
                close(cursor)
    finally:
        close(own)
    return newer, without


def _sees_every_namespace() -> bool:
    """Whether this process has ``CAP_SYS_ADMIN`` in the initial user
    namespace: the kernel's list of namespaces leaves out those the caller
    has no such right over (Linux 6.18 refuses the list instead; 6.12 says
    nothing). ``capget``, not /proc/self/status: a fifth of the cost."""
    try:
        if os.readlink("/proc/self/ns/user") != _INITIAL_USER_NAMESPACE:
            return False
    except OSError:
        return False
    header = ctypes.create_string_buffer(_CAP_HEADER.pack(_CAP_VERSION_3, 0), _CAP_HEADER.size)
    sets = ctypes.create_string_buffer(2 * _CAP_SETS.size)  # capabilities 0-31, then 32-63
    if _capget()(header, sets) != 0:
        return False
    effective, _, _ = _CAP_SETS.unpack_from(sets.raw)
    return bool(effective >> _CAP_SYS_ADMIN & 1)


@functools.cache
def _capget() -> Callable[..., int]:
    """libc's ``capget`` (its syscall number differs between architectures)."""
    return ctypes.CDLL(None, use_errno=True).capget


class _MountsAfter:
    """Lists, in mount namespaces, the mounts whose unique id is larger than
    ``oldest``: ``listmount`` lists in the order of the ids, from the one
    after ``param``, ``_CHUNK`` at a time."""

    def __init__(self, oldest: int) -> None:
        self._oldest = oldest
        self._request = ctypes.create_string_buffer(_MNT_ID_REQ.size)
        _MNT_ID_REQ.pack_into(self._request, 0, _MNT_ID_REQ.size, 0, _LSMT_ROOT, oldest, 0)
        self._ids = (ctypes.c_uint64 * _CHUNK)()
        # The call's arguments, made once: only the namespace's id and param
        # change, in place (a scan asks every namespace).
        self._call = (
            ctypes.c_long(_NR_LISTMOUNT),
            self._request,
            self._ids,
            ctypes.c_size_t(_CHUNK),
            ctypes.c_ulong(0),
        )
        self._syscall = _lib().syscall

    def newer_in(self, namespace: int) -> list[int] | None:
        """Those of mount namespace ``namespace`` (an id), oldest first: none
        for one that has no mount at all any more; None if the kernel cannot
        say."""
        _U64.pack_into(self._request, _NS_ID_AT, namespace)
        _U64.pack_into(self._request, _PARAM_AT, self._oldest)
        found: list[int] = []
        while True:
            count: int = self._syscall(*self._call)
            if count < 0:
                return [] if ctypes.get_errno() == errno.ENOENT and not found else None
            found += self._ids[:count]
            if count < _CHUNK:
                return found
            _U64.pack_into(self._request, _PARAM_AT, found[-1])


def _copies_among(namespace: int, mounts: list[int], needles: list[bytes]) -> set[int] | None:
    """Which of ``mounts`` (unique ids, in mount namespace ``namespace``) a
    needle marks, with the mount a marked bind lies on, as
    ``_matching_mounts`` finds them in a mountinfo (the same mount ids),
    but from ``statmount``, without a process of the namespace; None if the
    kernel cannot say."""
    request = ctypes.create_string_buffer(_MNT_ID_REQ.size)
    buf = ctypes.create_string_buffer(_STATMOUNT_SIZE)
    found = set()
    for mount in mounts:
        _MNT_ID_REQ.pack_into(request, 0, _MNT_ID_REQ.size, 0, mount, _STATMOUNT_ASKED, namespace)
        if _lib().syscall(_NR_STATMOUNT, request, buf, ctypes.c_size_t(_STATMOUNT_SIZE), ctypes.c_uint(0)):
            if ctypes.get_errno() == errno.ENOENT:
                continue  # unmounted meanwhile
            return None  # its strings do not fit, or not allowed
        mask, major, minor = _STATMOUNT_HEAD.unpack_from(buf, 8)
        if mask & _STATMOUNT_NEEDED != _STATMOUNT_NEEDED:
            return None
        mount_id, parent_id = _STATMOUNT_OLD_IDS.unpack_from(buf, 56)
        root_at, point_at = _STATMOUNT_PATHS.unpack_from(buf, 104)
        options_at = _STATMOUNT_OPTIONS.unpack_from(buf, 4)[0] if mask & _STATMOUNT_MNT_OPTS else 0
        root = _statmount_string(buf, root_at)
        line = b" %d:%d %s %s %s" % (
            major,
            minor,
            root,
            _statmount_string(buf, point_at),
            _statmount_string(buf, options_at),
        )
        if any(needle in line for needle in needles):
            found.add(mount_id)
            if any(needle in root for needle in needles):
                found.add(parent_id)  # the mount this bind of ours lies on
    return found


def _statmount_string(buf: ctypes.Array[ctypes.c_char], offset: int) -> bytes:
    """A string ``statmount`` returned at ``offset`` (0: none), read in
    place (the buffer is large)."""
    if not offset:
        return b""
    return ctypes.string_at(ctypes.addressof(buf) + _STATMOUNT_STRINGS + offset)


def _unique_mount_id(path: str) -> tuple[int, bool] | None:
    """``(unique mount id, is the root of its mount)`` of ``path`` (not
    followed if a symlink), or None if the kernel cannot say."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    res = _lib().statx(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_MNT_ID_UNIQUE, buf)
    raw = buf.raw
    if res != 0 or not int.from_bytes(raw[0:4], "little") & _STATX_MNT_ID_UNIQUE:
        return None
    if not int.from_bytes(raw[56:64], "little") & _STATX_ATTR_MOUNT_ROOT:
        return None
    mount_root = bool(int.from_bytes(raw[8:16], "little") & _STATX_ATTR_MOUNT_ROOT)
    return int.from_bytes(raw[144:152], "little"), mount_root


def _parent_of(mount: int) -> int | None:
    """The unique id of the mount that mount ``mount`` (a unique id, in this
    namespace) is mounted on, or None if the kernel cannot say."""
    request = ctypes.create_string_buffer(
        _MNT_ID_REQ.pack(_MNT_ID_REQ.size, 0, mount, _STATMOUNT_MNT_BASIC, 0), _MNT_ID_REQ.size
    )
    buf = ctypes.create_string_buffer(_STATMOUNT_STRINGS)  # no string is asked for
    size = ctypes.c_size_t(_STATMOUNT_STRINGS)
    if _lib().syscall(_NR_STATMOUNT, request, buf, size, ctypes.c_uint(0)) != 0:
        return None
    raw = buf.raw
    mask, _, _ = _STATMOUNT_HEAD.unpack_from(raw, 8)
    if not mask & _STATMOUNT_MNT_BASIC:
        return None
    parent: int = _STATMOUNT_PARENT.unpack_from(raw, 48)[0]
    return parent


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
