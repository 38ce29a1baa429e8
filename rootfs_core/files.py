"""Replacing a small file so that a reader sees the old one or the new one,
never a half-written one: the one way rootfs writes records, layer
descriptions and caches.

A temporary name next to the file is created exclusively (never through a
symlink, never reusing a stale file), filled, and renamed over the file.
A failure removes the temporary name and raises.
"""

from __future__ import annotations

import os

_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def replace_file(
    path: str, data: bytes, *, mode: int = 0o600, dir_fd: int | None = None, keep_open: bool = False
) -> int | None:
    """Make ``path`` (relative to ``dir_fd`` if given) hold ``data``.

    With ``keep_open`` the new file's descriptor is returned, open for
    writing, so a caller can go on appending to exactly the file it made
    (the store's journal); else it is closed and None returned."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, _NEW, mode, dir_fd=dir_fd)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        os.close(fd)
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise
    if keep_open:
        return fd
    os.close(fd)
    return None
