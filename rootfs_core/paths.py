"""Path rules: what may be mounted on, and where a prototype's symlinks lead.

A prototype is data, not trusted code. ``sbin -> usr/sbin`` is normal, and
so is a hostile ``var -> /etc`` or ``etc -> ../../../../etc``. mount(2)
follows symlinks in its target, so every target below a root is resolved here
as the container would see it, with the root as ``/``: an absolute link or
a ``..`` cannot climb above the root, and the result has no symlink left in it.
"""

from __future__ import annotations

import errno
import os
import stat

_MAX_LINKS = 40  # the kernel's own limit (ELOOP)


def resolve_in_root(root: str, relative: str) -> str:
    """Return the real path of ``relative`` inside ``root``, as if ``root`` were ``/``.

    Raises ``OSError`` (``ENOENT``, ``ELOOP``, ``ENOTDIR``) like the kernel would
    inside a chroot. The result always starts with ``root`` and names no symlink.
    """
    pending = _components(relative)
    resolved: list[str] = []
    links = 0
    while pending:
        part = pending.pop(0)
        if part == "..":
            if resolved:
                resolved.pop()
            continue
        here = os.path.join(root, *resolved, part)
        mode = os.lstat(here).st_mode
        if stat.S_ISLNK(mode):
            links += 1
            if links > _MAX_LINKS:
                raise OSError(errno.ELOOP, "too many levels of symbolic links", here)
            target = os.readlink(here)
            if target.startswith("/"):
                resolved = []
            pending = _components(target) + pending
            continue
        if pending and not stat.S_ISDIR(mode):
            raise OSError(errno.ENOTDIR, "not a directory", here)
        resolved.append(part)
    return os.path.join(root, *resolved) if resolved else root


def _components(path: str) -> list[str]:
    return [p for p in path.split("/") if p not in ("", ".")]


def is_within(path: str, parent: str) -> bool:
    """Whether normalised ``path`` is ``parent`` or below it (no filesystem access)."""
    path = os.path.normpath(path)
    parent = os.path.normpath(parent)
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def has_no_symlink(path: str) -> bool:
    """Whether no component of absolute ``path`` is a symlink, so a mount on it
    lands exactly there."""
    return os.path.realpath(path) == os.path.normpath(path)


def symlink_on_the_way(path: str, top: str, checked: set[str]) -> str | None:
    """The first directory between ``top`` (excluded) and ``path`` (excluded)
    that is a symlink, or None. ``top`` must be a real path; ``checked``
    remembers the directories found sound, for the next call. A path taken
    from state on disk is only followed once this says None, so a symlink
    planted in it cannot lead an unmount or a delete elsewhere."""
    relative = os.path.relpath(os.path.dirname(path), top)
    if relative == ".":
        return None
    here = top
    for part in relative.split("/"):
        here = os.path.join(here, part)
        if here in checked:
            continue
        try:
            if stat.S_ISLNK(os.lstat(here).st_mode):
                return here
        except FileNotFoundError:
            return None  # nothing below it exists to be followed
        checked.add(here)
    return None
