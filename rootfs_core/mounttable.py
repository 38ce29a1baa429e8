"""Reading the mount table, for the rare operations that need all of it.

Generate and remove never read it for an overlay: they know their mounts
from the journal and confirm each with statx, so their cost does not grow
with the number of live instances. ``gc`` (mounts no record explains), a
remove of a root with mounts on it (mounts someone else added), the probes
(which filesystem the base directory is on) and the tests read it.
"""

from __future__ import annotations

import errno
import os


def mount_points() -> list[str]:
    """Every mount point of this mount namespace, in mount order."""
    points = []
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            points.append(os.fsdecode(_unescape(line.split(b" ")[4])))
    return points


def filesystems() -> dict[str, str]:
    """Mount point -> filesystem type, as this mount namespace shows them
    (the last mount on a point is the one seen there)."""
    found = {}
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            fields = line.split()
            found[os.fsdecode(_unescape(fields[4]))] = os.fsdecode(fields[fields.index(b"-") + 1])
    return found


def mounts_below(path: str) -> list[str]:
    """Mount points at or below ``path``, in mount order."""
    prefix = path.rstrip("/") + "/"
    return [p for p in mount_points() if p == path or p.startswith(prefix)]


def filesystem_of(path: str) -> tuple[str, str]:
    """``(filesystem type, mount point)`` of the mount that holds ``path``
    (``("ext4", "/")``), found by its mount id: a longest-prefix match on
    mount points would be wrong for a bind mount. Raises ``OSError``."""
    fields = _line_of(path)
    fstype = fields[fields.index(b"-") + 1]
    return os.fsdecode(fstype), os.fsdecode(_unescape(fields[4]))


def is_unbindable(path: str) -> bool:
    """Whether the mount holding ``path`` refuses to be bound (False if unknown)."""
    try:
        fields = _line_of(path)
    except OSError:
        return False
    return b"unbindable" in fields[6 : fields.index(b"-")]


def location(path: str) -> tuple[str, str]:
    """Where ``path`` really is: ``(device, path inside that filesystem)``,
    the same for every alias of a directory (a bind mount of it, a symlink
    to it), so two paths overlap exactly when their locations do. ``path``
    must be a real path (no symlink). Raises ``OSError``."""
    fields = _line_of(path)
    mount_point = os.fsdecode(_unescape(fields[4]))
    inside = os.fsdecode(_unescape(fields[3]))
    relative = os.path.relpath(path, mount_point)
    return os.fsdecode(fields[2]), os.path.normpath(os.path.join(inside, relative))


def _line_of(path: str) -> list[bytes]:
    """The mountinfo fields of the mount holding ``path``, found by mount id."""
    from rootfs_core.syscalls import mount_info

    mnt_id = mount_info(path)[0]
    with open("/proc/self/mountinfo", "rb") as fh:
        for line in fh:
            fields = line.split()
            if int(fields[0]) == mnt_id:
                return fields
    raise OSError(errno.ENOENT, "mount not in /proc/self/mountinfo", path)


def _unescape(raw: bytes) -> bytes:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo``."""
    out = bytearray()
    i = 0
    while i < len(raw):
        code = raw[i + 1 : i + 4]
        if raw[i] == 0x5C and len(code) == 3 and code.isdigit():
            out.append(int(code, 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)
