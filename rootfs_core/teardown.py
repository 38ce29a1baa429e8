"""Taking an instance apart: the journal of a generate, undone in reverse.

Used for a failed generate, for remove, and for the sweep of crashed
instances, so the three cannot disagree. Each undo is idempotent (a step that
was journaled but never happened is skipped), deletes only inside the
instance directory, and never deletes through a mount: a mount is unmounted
and confirmed gone first, and tree deletion refuses to cross a mount point.

The phases, each a function here, run by ``RootFS`` in this order:

1. ``check``: the journal is validated before anything is touched (no path
   outside the instance, no symlink on the way to one, no delete inside an
   earlier mount).
2. ``refuse_if_busy``: if a process uses any of the instance's mounts, in
   this mount namespace (the kernel's answer) or in any other (copies of
   the mounts, found by ``namespaces``), the teardown is refused.
3. ``unmount_all``: every mount is unmounted, last first.
4. only if no copy of the mounts is left in another namespace (asked again
   now that ours are gone: a namespace made meanwhile counts too),
   ``delete_all``: the daemons waited for, the directories deleted, last
   first. Otherwise the data stays, the instance stays ``removing``, and a
   later ``gc`` or remove finishes the job once the copies are gone.

The first failure stops the teardown, so a root that becomes busy after
the check loses some mounts but no data, and a later remove finishes it.
"""

from __future__ import annotations

import errno
import os
import time

from rootfs_core import log, mounttable, namespaces, paths
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.store import MOUNT_OPS, Op, Step
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, Syscalls

UNMOUNT_TRIES = 5
UNMOUNT_FIRST_WAIT = 0.05  # seconds, doubled after each EBUSY
DAEMON_EXIT_TIMEOUT = 5.0  # seconds a FUSE daemon may take to exit once unmounted


def check(steps: list[Step], instance_dir: str) -> None:
    """Refuse, before touching anything, a journal that could make an
    unmount or a delete go where it must not: a path outside the instance, a
    symlink on the way to one (a symlink to delete is never followed), or a
    directory to delete that a mount made *before* it covers (a valid
    journal creates every directory before mounting on it)."""
    top = os.path.dirname(instance_dir)
    # Directories found no symlink (the base directory is a real path); a
    # path whose parent is one needs no look on the way: each of that
    # parent's own parents was found sound before it.
    checked = {top}
    for index, step in enumerate(steps):
        if not paths.is_within(step.path, instance_dir):
            raise RootFSError(ErrorId.ErrNotOurRoot, f"journal names {step.path}, outside {instance_dir}")
        sound = os.path.dirname(step.path) in checked
        link = None if sound else paths.symlink_on_the_way(step.path, top, checked)
        if link is not None:
            raise RootFSError(
                ErrorId.ErrRecord,
                f"the journal's path {step.path} goes through the symlink {link}: refusing to follow it; "
                "nothing was touched",
            )
        if step.op not in (Op.DIR, Op.TREE):
            continue
        if os.path.islink(step.path):
            raise RootFSError(step.undo_error, f"{step.path} is a symlink: refusing to delete it")
        checked.add(step.path)
        for earlier in steps[:index]:
            if earlier.op in MOUNT_OPS and paths.is_within(earlier.path, step.path):
                raise RootFSError(
                    ErrorId.ErrRecord,
                    f"the journal is inconsistent: {step.path} would be deleted after {earlier.path} "
                    f"was mounted in it; nothing was touched",
                )


def refuse_if_busy(
    steps: list[Step], signature: namespaces.Signature, syscalls: Syscalls
) -> namespaces.Copies:
    """Fail before touching anything if a process uses one of the mounts,
    in this mount namespace or in any other (through a copy of it); return
    the copies found in other namespaces."""
    mounts = [step for step in steps if step.op in MOUNT_OPS]
    if not mounts:
        return namespaces.Copies({}, True)
    _refuse_if_busy_here(mounts, syscalls)
    copies = namespaces.scan(signature, mounted_here=True)
    if copies:
        users = copies.holders()
        if users:
            raise RootFSError(
                ErrorId.ErrRootBusy,
                f"{mounts[0].path} is in use in another mount namespace by {', '.join(users)} "
                "(a container or a process that entered the root); stop it and remove again",
            )
    return copies


def signature(
    instance_dir: str, steps: list[Step], prototype: str, syscalls: Syscalls
) -> namespaces.Signature:
    """What marks this instance's mounts in another namespace (see
    ``namespaces``), read while they are still mounted here: its id, its
    mount points (those mounted here first; its root always, even when the
    journal no longer names it, for a second look after ours are gone), the
    device numbers of the mounted filesystems that only it has (not a bind
    of the prototype or of the base directory's filesystem), and the unique
    id of its oldest mount, than which every copy is newer."""
    targets = sorted({step.path for step in steps if step.op in MOUNT_OPS} | {instance_dir + "/root"})
    shared = set()
    for path in (instance_dir, prototype):
        try:
            shared.add(os.stat(path).st_dev)
        except OSError:
            pass
    devices = []
    mounted = []
    for target in targets:
        try:
            if not syscalls.is_mountpoint(target):
                continue
            dev = os.stat(target).st_dev
        except OSError:
            continue
        mounted.append(target)
        if dev not in shared:
            devices.append(f" {os.major(dev)}:{os.minor(dev)} ".encode())
    ordered = mounted + [target for target in targets if target not in mounted]
    return namespaces.Signature(
        [os.path.basename(instance_dir).encode()], devices, ordered, namespaces.oldest_mount(mounted)
    )


def unmount_all(steps: list[Step], syscalls: Syscalls) -> None:
    """Unmount every journaled mount, last first, dropping each from
    ``steps`` once it is gone."""
    for step in reversed([step for step in steps if step.op in MOUNT_OPS]):
        unmount(step.path, step.undo_error, syscalls, fuse=step.op == Op.FUSE_MOUNT)
        steps.remove(step)


def held_elsewhere(signature: namespaces.Signature, before: namespaces.Copies) -> namespaces.Copies:
    """Copies of the instance's mounts left in other namespaces, asked once
    ours are unmounted (a namespace made meanwhile counts too): while there
    are any, its data must stay. A copy found ``before`` by its device
    number alone (a FUSE root after ``pivot_root``) cannot be recognised now
    that the number is free: its namespace still alive counts."""
    copies = namespaces.scan(signature, mounted_here=False, clean=before.clean)
    if not copies.complete:
        # Without privilege other users' namespaces are invisible: say so
        # every time. As root only a process a security policy hides is
        # (this can be the init of a sandbox): said with -v.
        log.emit(
            log.WARNING if os.geteuid() != 0 else log.INFO,
            "not every mount namespace could be inspected (%s): a copy of %s's mounts held there "
            "cannot be seen",
            "other users' are invisible without privilege" if os.geteuid() != 0 else "access denied",
            signature.targets[0],
        )
    return copies if copies else before.alive()


def delete_all(steps: list[Step], syscalls: Syscalls) -> None:
    """Undo the remaining (non-mount) steps, last first, dropping each from
    ``steps`` once undone."""
    while steps:
        _undo_step(steps[-1], syscalls)
        steps.pop()


def undo(steps: list[Step], instance_dir: str, syscalls: Syscalls) -> None:
    """All of it at once, for an instance nobody can have seen yet (a failed
    generate): check, unmount, delete."""
    check(steps, instance_dir)
    _refuse_if_busy_here([step for step in steps if step.op in MOUNT_OPS], syscalls)
    unmount_all(steps, syscalls)
    delete_all(steps, syscalls)


def _refuse_if_busy_here(mounts: list[Step], syscalls: Syscalls) -> None:
    """Fail before touching anything if a process of this mount namespace
    uses one of the mounts.

    The kernel answers for a mount with nothing mounted on it; for one with
    mounts on it (a quilt's root) it always says busy, so the processes are
    looked up instead, and the mount table for mounts someone else added
    below it (only then: both read the whole of /proc).
    """
    for step in reversed(mounts):  # innermost first: the most precise answer
        if step.op != Op.MOUNT:
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
    error = step.undo_error
    if step.op == Op.DIR:
        log.info("rmdir %s", step.path)
        try:
            syscalls.rmdir(step.path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RootFSError(error, f"cannot remove directory {step.path}", cause=exc) from exc
    elif step.op == Op.TREE:
        if not os.path.lexists(step.path):
            return
        log.info("delete tree %s", step.path)
        try:
            syscalls.remove_tree(step.path)
        except OSError as exc:
            raise RootFSError(error, f"cannot delete {step.path}", cause=exc) from exc
    elif step.op == Op.DAEMON:
        _wait_for_exit(step, error)
    else:
        raise RootFSError(ErrorId.ErrRecord, f"unknown step {step.op!r} in the journal")


def _wait_for_exit(step: Step, error: ErrorId) -> None:
    """Wait until the journaled daemon (that pid with that start time, so
    never another process that took its pid, nor an impostor with its name)
    has exited; fail after ``DAEMON_EXIT_TIMEOUT`` so a stuck one is never
    silently left writing in what is about to be deleted."""
    pid_text, _, start = step.detail.partition(":")
    if not pid_text.isdigit():
        return  # nothing was found to wait for when it was journaled
    pid = int(pid_text)
    deadline = time.monotonic() + DAEMON_EXIT_TIMEOUT
    pause = 0.002
    while process_start(pid) == start:
        if time.monotonic() >= deadline:
            raise RootFSError(
                error,
                f"the FUSE daemon (pid {pid}) that served {step.path} is still running "
                f"{DAEMON_EXIT_TIMEOUT:g}s after it was unmounted; stop it (kill {pid}) and remove again",
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


def process_start(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot, as text),
    or None if there is no such process (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] == b"Z":
        return None
    return fields[19].decode()


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
