"""Leaving nothing behind: the benchmark's own last line of defence.

The library removes its roots and the raw baselines remove theirs; this
module checks that, from the kernel's mount table as the library reads it
(``rootfs_core.mounttable``), and repairs what a crash half-way left:
unmount by path (deepest first), verify the table is clear, and only then
delete the directory tree. A tree is never deleted while anything below it
is still mounted, because deleting through a mount deletes the prototype's
or the host's files.
"""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from rawops import LIBC, UMOUNT_NOFOLLOW

from rootfs_core import RootFS, mounttable


def mounts_below(path: str) -> list[str]:
    """Mount points at or below ``path``, deepest (and latest) first."""
    found = mounttable.mounts_below(os.path.realpath(path))
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


def clean_up(work: str) -> tuple[dict[str, Any], list[str]]:
    """The end of a run: remove every instance the library still knows of
    in the base directories below ``work``, then repair and verify from the
    mount table, then delete ``work``. Returns the report (``ok``: nothing
    is left) and the errors met on the way."""
    leftovers: list[str] = []
    errors: list[str] = []
    if os.path.isdir(work):
        for entry in sorted(os.scandir(work), key=lambda e: e.name):
            if not os.path.isdir(os.path.join(entry.path, ".rootfs")):
                continue
            try:
                rfs = RootFS(entry.path)  # sweeps incomplete instances on opening
                rfs.gc()
                for inst in rfs.instances():
                    leftovers.append(f"instance {inst.root}")
                    rfs.remove(inst.id)
            except Exception as exc:
                errors.append(f"cleanup of {entry.path}: {exc}")
    still = mounts_below(work) if os.path.isdir(work) else []
    if still:
        leftovers += [f"mount {p}" for p in still]
        still = unmount_all_below(work)
    deleted = not still and delete_tree(work)
    report = {
        "work_dir": work,
        "left_by_the_run": leftovers,  # found at the end, then repaired
        "mounts_still_below": still,
        "work_dir_deleted": deleted,
        "ok": deleted and not still,
    }
    return report, errors
