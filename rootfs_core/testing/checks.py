"""What the tests compare: the mount table, and a prototype's exact state."""

from __future__ import annotations

import hashlib
import os
import stat

from rootfs_core.mounttable import mount_points, mounts_below

__all__ = ["instance_mounts", "mount_options", "mount_points", "mounts_below", "open_errno", "tree_checksum"]


def instance_mounts(base: str) -> list[str]:
    """The mount points below base directory ``base``, without the private
    mount of the base directory itself (``rootfs_core.basedir``), which
    stays: what is left of instances."""
    return [p for p in mounts_below(base) if p != base]


def tree_checksum(path: str) -> str:
    """A digest of everything a prototype is: names, types, modes, owners,
    sizes, mtimes, file contents, symlink targets, device numbers, xattrs.
    Device nodes and fifos are never opened."""
    digest = hashlib.sha256()
    top = os.fsencode(path)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        for name in [b".", *sorted(dirnames), *sorted(filenames)]:
            full = os.path.join(dirpath, name) if name != b"." else dirpath
            st = os.lstat(full)
            rel = os.path.relpath(full, top)
            digest.update(rel + b"\0")
            digest.update(
                f"{st.st_mode:o} {st.st_uid} {st.st_gid} {st.st_size} {st.st_mtime_ns} {st.st_rdev}".encode()
            )
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            if not stat.S_ISLNK(st.st_mode):
                try:
                    for key in sorted(os.listxattr(full, follow_symlinks=False)):
                        digest.update(key.encode() + os.getxattr(full, key, follow_symlinks=False))
                except OSError:
                    pass
    return digest.hexdigest()


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
