"""Taking an instance apart: the journal of a generate, undone in reverse.

Used for a failed generate, for remove, and for the sweep of crashed
instances, so the three cannot disagree. Each undo is idempotent (a step that
was journaled but never happened is skipped), deletes only inside the
instance directory, and never deletes through a mount: a mount is unmounted
and confirmed gone first, and tree deletion refuses to cross a mount point.

Nothing is deleted until every mount is gone: first, if a process uses any
of the instance's mounts, the teardown is refused before anything is
touched; then every mount is unmounted, last first; only then are the
directories deleted, last first. The first failure stops the teardown, so a
root that becomes busy after the check loses some mounts but no data, and a
later remove finishes the job.
"""

from __future__ import annotations

import errno
import logging
import os
import time

from rootfs_core import mounttable, paths
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.store import Step
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, Syscalls

log = logging.getLogger("rootfs")

UNMOUNT_TRIES = 5
UNMOUNT_FIRST_WAIT = 0.05  # seconds, doubled after each EBUSY


_MOUNT_OPS = ("mount", "fuse-mount")


def undo(steps: list[Step], instance_dir: str, syscalls: Syscalls) -> None:
    """Undo ``steps`` (see the module's docstring for the order), removing
    each from the list once undone, so that the list always names exactly
    what may still exist."""
    _check(steps, instance_dir)
    mounts = [step for step in steps if step.op in _MOUNT_OPS]
    _refuse_if_busy(mounts, syscalls)
    for step in reversed(mounts):
        unmount(step.path, ErrorId[step.undo_error], syscalls, fuse=step.op == "fuse-mount")
        steps.remove(step)
    while steps:
        _undo_step(steps[-1], syscalls)
        steps.pop()


def _check(steps: list[Step], instance_dir: str) -> None:
    """Refuse, before touching anything, a journal that could make a delete
    go where it must not: a path outside the instance, a symlink to delete
    (never followed), or a directory to delete that a mount made *before* it
    covers (a valid journal creates every directory before mounting on it)."""
    for index, step in enumerate(steps):
        if not paths.is_within(step.path, instance_dir):
            raise RootFSError(ErrorId.ErrNotOurRoot, f"journal names {step.path}, outside {instance_dir}")
        if step.op in _MOUNT_OPS:
            continue
        if os.path.islink(step.path):
            raise RootFSError(ErrorId[step.undo_error], f"{step.path} is a symlink: refusing to delete it")
        for earlier in steps[:index]:
            if earlier.op in _MOUNT_OPS and paths.is_within(earlier.path, step.path):
                raise RootFSError(
                    ErrorId.ErrRecord,
                    f"the journal is inconsistent: {step.path} would be deleted after {earlier.path} "
                    f"was mounted in it; nothing was touched",
                )


def _refuse_if_busy(mounts: list[Step], syscalls: Syscalls) -> None:
    """Fail before touching anything if a process uses one of the mounts.

    The kernel answers for a mount with nothing mounted on it; for one with
    mounts on it (a quilt's root) it always says busy, so the processes are
    looked up instead, and the mount table for mounts someone else added
    below it (only then: both read the whole of /proc).
    """
    for step in reversed(mounts):  # innermost first: the most precise answer
        if step.op != "mount":
            continue  # FUSE: only fusermount3 can tell, when unmounting
        covered = any(other is not step and paths.is_within(other.path, step.path) for other in mounts)
        if not covered:
            if syscalls.is_busy(step.path):
                raise RootFSError(ErrorId.ErrRootBusy, _busy_message(step.path))
            continue
        users = syscalls.processes_using(step.path)
        if users:
            raise RootFSError(ErrorId.ErrRootBusy, f"{_busy_message(step.path)} (used by {', '.join(users)})")
        ours = {s.path for s in mounts}
        foreign = [p for p in mounttable.mounts_below(step.path) if p not in ours]
        if foreign:
            raise RootFSError(
                ErrorId.ErrRootBusy,
                f"{step.path} has mounts rootfs did not make ({', '.join(foreign)}): unmount them first",
            )


def _busy_message(target: str) -> str:
    return (
        f"{target} is busy: a process still has its working directory or an open file in it "
        f"(see `fuser -vm {target}`); stop it and remove again"
    )


def _undo_step(step: Step, syscalls: Syscalls) -> None:
    error = ErrorId[step.undo_error]
    if step.op == "dir":
        log.info("rmdir %s", step.path)
        try:
            syscalls.rmdir(step.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RootFSError(error, f"cannot remove directory {step.path}", cause=exc) from exc
    elif step.op == "tree":
        if not os.path.lexists(step.path):
            return
        log.info("delete tree %s", step.path)
        try:
            syscalls.remove_tree(step.path)
        except OSError as exc:
            raise RootFSError(error, f"cannot delete {step.path}", cause=exc) from exc
    else:
        raise RootFSError(ErrorId.ErrRecord, f"unknown step {step.op!r} in the journal")


def unmount(target: str, error: ErrorId, syscalls: Syscalls, *, fuse: bool = False) -> bool:
    """Unmount ``target`` if it is a mount point, retrying while busy, and
    confirm it is one no more; return whether there was something to unmount.
    ``fuse`` uses fusermount3, which needs no privilege. umount2 itself says
    EINVAL when there is nothing to unmount, so only fusermount3, which
    cannot, is asked beforehand."""
    try:
        if fuse and not syscalls.is_mountpoint(target):
            return False
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise RootFSError(error, f"cannot tell whether {target} is mounted", cause=exc) from exc
    wait = UNMOUNT_FIRST_WAIT
    for attempt in range(1, UNMOUNT_TRIES + 1):
        log.info("umount %s", target)
        try:
            if fuse:
                syscalls.fuse_unmount(target)
            else:
                syscalls.umount(target, UMOUNT_NOFOLLOW)
            break
        except FileNotFoundError:
            return False  # never made
        except OSError as exc:
            if exc.errno == errno.EINVAL and not _still_mounted(target, syscalls):
                return False  # not a mount point (any more)
            if exc.errno != errno.EBUSY:
                # Without privilege umount2 says EPERM even when nothing is
                # mounted (a probe that could not mount): only a real mount
                # point makes that a failure.
                if not _still_mounted(target, syscalls):
                    return False
                raise RootFSError(error, f"cannot unmount {target}", cause=exc) from exc
            if attempt == UNMOUNT_TRIES:
                raise RootFSError(ErrorId.ErrRootBusy, _busy_message(target), cause=exc) from exc
            time.sleep(wait)
            wait *= 2
    if _still_mounted(target, syscalls):
        raise RootFSError(error, f"{target} is still a mount point after unmounting it")
    return True


def _still_mounted(target: str, syscalls: Syscalls) -> bool:
    try:
        return syscalls.is_mountpoint(target)
    except FileNotFoundError:
        return False
