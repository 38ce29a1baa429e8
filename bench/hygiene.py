"""Leaving nothing behind: the benchmark's own last line of defence.

The library removes its roots and the raw baselines remove theirs; this
module checks that, from the kernel's mount table, and repairs what a crash
half-way left: unmount by path (deepest first), verify the table is clear,
and only then delete the directory tree. A tree is never deleted while
anything below it is still mounted, because deleting through a mount
deletes the prototype's or the host's files.
"""

from __future__ import annotations

import os
import re
import shutil
import time

from rawops import LIBC, UMOUNT_NOFOLLOW

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as three octal digits."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounts_below(path: str) -> list[str]:
    """Mount points at or below ``path``, deepest (and latest) first."""
    prefix = os.path.realpath(path)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    found.reverse()  # later mounts stack on earlier ones
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def unmount_all_below(path: str, *, tries: int = 5) -> list[str]:
    """Unmount everything below ``path``; return what is still mounted after
    ``tries`` rounds (empty on success). A busy mount is retried, never detached
    silently: a lazily detached mount could still be written to."""
    for attempt in range(tries):
        left = mounts_below(path)
        if not left:
            return []
        for point in left:
            try:
                LIBC.umount(os.fsencode(point), UMOUNT_NOFOLLOW)
            except OSError:
                pass
        time.sleep(0.05 * attempt)
    return mounts_below(path)


def delete_tree(path: str) -> bool:
    """Delete ``path`` if, and only if, nothing is mounted below it (checked
    just before); return whether it is gone."""
    if not os.path.lexists(path):
        return True
    if mounts_below(path):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.lexists(path)
