"""Taking an instance apart: the journal of a generate, undone in reverse.

Used for a failed generate, for remove, and for the sweep of crashed
instances, so the three cannot disagree. Each undo is idempotent (a step that
was journaled but never happened is skipped), deletes only inside the
instance directory, and never deletes through a mount: a mount is unmounted
and confirmed gone first, and tree deletion refuses to cross a mount point.
The first failure stops the teardown, because every later step (in reverse
order, an earlier one) may be a directory that failure left mounted.
"""

from __future__ import annotations

import errno
import logging
import os
import time

from rootfs_core import paths
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.store import Step
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, Syscalls

log = logging.getLogger("rootfs")

UNMOUNT_TRIES = 5
UNMOUNT_FIRST_WAIT = 0.05  # seconds, doubled after each EBUSY


def undo(steps: list[Step], instance_dir: str, syscalls: Syscalls) -> None:
    """Undo ``steps`` last first, removing each from the list once undone, so
    that the list always names exactly what may still exist."""
    while steps:
        _undo_step(steps[-1], instance_dir, syscalls)
        steps.pop()


def _undo_step(step: Step, instance_dir: str, syscalls: Syscalls) -> None:
    error = ErrorId[step.undo_error]
    if not paths.is_within(step.path, instance_dir):
        raise RootFSError(ErrorId.ErrNotOurRoot, f"journal names {step.path}, outside {instance_dir}")
    if step.op == "mount":
        unmount(step.path, error, syscalls)
    elif step.op == "fuse-mount":
        unmount(step.path, error, syscalls, fuse=True)
    elif step.op == "dir":
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


def unmount(target: str, error: ErrorId, syscalls: Syscalls, *, fuse: bool = False) -> None:
    """Unmount ``target`` if it is a mount point, retrying while busy, and
    confirm it is one no more; ``fuse`` uses fusermount3, which needs no
    privilege. umount2 itself says EINVAL when there is nothing to unmount,
    so only fusermount3, which cannot, is asked beforehand."""
    try:
        if fuse and not syscalls.is_mountpoint(target):
            return
    except FileNotFoundError:
        return
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
            return  # never made
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # not mounted (any more)
                break
            if exc.errno != errno.EBUSY:
                # Without privilege umount2 says EPERM even when nothing is
                # mounted (a probe that could not mount): only a real mount
                # point makes that a failure.
                if not _still_mounted(target, syscalls):
                    return
                raise RootFSError(error, f"cannot unmount {target}", cause=exc) from exc
            if attempt == UNMOUNT_TRIES:
                raise RootFSError(
                    ErrorId.ErrRootBusy,
                    f"{target} is busy: a process still has its working directory or an open "
                    f"file in it (see `fuser -vm {target}`); stop it and remove again",
                    cause=exc,
                ) from exc
            time.sleep(wait)
            wait *= 2
    if _still_mounted(target, syscalls):
        raise RootFSError(error, f"{target} is still a mount point after unmounting it")


def _still_mounted(target: str, syscalls: Syscalls) -> bool:
    try:
        return syscalls.is_mountpoint(target)
    except FileNotFoundError:
        return False
