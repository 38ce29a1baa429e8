"""Fault injection: whichever call fails, generate reports the seed's id for
that step and leaves nothing; remove keeps the record so a later one finishes."""

from __future__ import annotations

import errno
import os

import pytest

from rootfs_core import ErrorId, RootFS, RootFSError, basedir
from rootfs_core.syscalls import MS_BIND, MS_PRIVATE, MS_REMOUNT, LinuxSyscalls
from rootfs_core.testing.checks import tree_checksum
from rootfs_core.testing.faults import Call, FaultySyscalls
from rootfs_core.testing.fixtures import assert_base_dir_clean


def _acted_on(call: Call) -> str:
    """The path a call changes (a mount's or a copy's target)."""
    return str(call.args[1] if call.name in ("mount", "copy_tree") else call.args[0])


def _expected_generate_error(call: Call, instance: str) -> ErrorId:
    """The id a failure of ``call`` must be reported with, by what it acts on."""
    path = _acted_on(call)
    rw = os.path.join(instance, "rw")
    if call.name == "mount":
        return (
            ErrorId.ErrBindMountRoot if path == os.path.join(instance, "root") else ErrorId.ErrBindMountSubdir
        )
    if path == os.path.join(instance, "root"):
        return ErrorId.ErrCreateMountDir
    if path in (instance, rw):
        return ErrorId.ErrCreateTempDir
    if path.startswith(rw + "/") and path.endswith("-tmp"):
        return ErrorId.ErrOverlayTempDir
    assert path.startswith(rw + "/"), call
    return ErrorId.ErrOverlayDir


def _expected_remove_error(call: Call, instance: str) -> ErrorId:
    if call.name == "umount":
        return (
            ErrorId.ErrUnmountRoot
            if call.args[0] == os.path.join(instance, "root")
            else ErrorId.ErrUnmountSubdir
        )
    assert call.name in ("rmdir", "remove_tree"), call
    return ErrorId.ErrRemoveMountDir


def _faulty_quilt(base_dir: str) -> tuple[RootFS, FaultySyscalls]:
    """A quilt RootFS on faulty syscalls, already probed (the probe's calls
    are not the ones under test)."""
    faulty = FaultySyscalls()
    rfs = RootFS(base_dir, backend="quilt", syscalls=faulty)
    assert rfs.probe("quilt").supported
    return rfs, faulty


def test_every_generate_call_can_fail_cleanly(quilt: RootFS, prototype: str) -> None:
    base_dir = quilt.base_dir
    rfs, faulty = _faulty_quilt(base_dir)
    start = len(faulty.calls)
    root = rfs.generate(prototype)
    clean_run = faulty.calls[start:]
    rfs.remove(root)
    # the root, made private, remounted read-only; each of 7 dirs, made private
    assert [c.name for c in clean_run].count("mount") == 3 + 2 * 7
    assert {c.name for c in clean_run} == {"mkdir", "chmod", "mount", "copy_tree"}
    checksum = tree_checksum(prototype)
    for n, call in enumerate(clean_run, start=1):
        faulty.fail_on = {len(faulty.calls) + n}
        with pytest.raises(RootFSError) as info:
            rfs.generate(prototype)
        failed = faulty.calls[min(faulty.fail_on) - 1]
        assert failed.name == call.name, f"call {n} is not the same on every run"
        instance = os.path.join(base_dir, os.path.relpath(_acted_on(failed), base_dir).split("/")[0])
        assert info.value.error_id is _expected_generate_error(failed, instance), (n, call, info.value)
        assert info.value.cleanup_errors == []
        assert_base_dir_clean(base_dir)
        assert tree_checksum(prototype) == checksum


def test_every_remove_call_can_fail_and_be_retried(quilt: RootFS, prototype: str) -> None:
    base_dir = quilt.base_dir
    rfs, faulty = _faulty_quilt(base_dir)
    root = rfs.generate(prototype)
    start = len(faulty.calls)
    rfs.remove(root)
    clean_run = faulty.calls[start:]
    assert {c.name for c in clean_run} == {"umount", "remove_tree", "rmdir"}
    for n in range(1, len(clean_run) + 1):
        root = rfs.generate(prototype)
        instance = os.path.dirname(root)
        faulty.fail_on = {len(faulty.calls) + n}
        with pytest.raises(RootFSError) as info:
            rfs.remove(root)
        failed = faulty.calls[min(faulty.fail_on) - 1]
        assert info.value.error_id is _expected_remove_error(failed, instance), (n, failed, info.value)
        # The record is kept. A removal that failed before anything was
        # touched (the first unmount) leaves the root ready; once one step
        # took effect it is "removing" and never ready again.
        state = "ready" if n == 1 else "removing"
        assert [(i.root, i.state) for i in rfs.instances()] == [(root, state)], "the record must be kept"
        # A later remove finishes it (sweep=False: opening a base directory
        # would otherwise sweep the interrupted removal first, and this
        # remove would find nothing left to do).
        assert RootFS(base_dir, backend="quilt", sweep=False).remove(root) is True
        assert rfs.instances() == []
        assert_base_dir_clean(base_dir)


def test_probe_explains_missing_privilege(quilt: RootFS) -> None:
    base_dir = quilt.base_dir
    # The base directory's one-time set-up (bind on itself, made private:
    # rootfs_core.basedir) is done first, so that every RootFS below makes
    # the same calls: the one make-private of the base directory, then the
    # probe's. The probe's first mount is the one denied.
    basedir.make_private(base_dir, LinuxSyscalls())
    clean = FaultySyscalls()
    assert RootFS(base_dir, backend="quilt", syscalls=clean).probe("quilt").supported
    mounts = [(i, c) for i, c in enumerate(clean.calls, start=1) if c.name == "mount"]
    assert mounts[0][1] == Call("mount", ("", base_dir, "", MS_PRIVATE, "")), mounts[0]
    first_mount, bind = mounts[1]
    assert bind.args[1] != base_dir and bind.args[3] == MS_BIND, bind  # the bind of the probe's root
    denied = FaultySyscalls(fail_on={first_mount}, error=errno.EPERM)
    verdict = RootFS(base_dir, backend="quilt", syscalls=denied).probe("quilt")
    assert denied.calls[first_mount - 1].args[3] == MS_BIND  # the same call was denied
    assert not verdict.supported
    assert verdict.reason is not None and "EPERM" in verdict.reason and "CAP_SYS_ADMIN" in verdict.reason
    assert_base_dir_clean(base_dir)


def test_probe_reports_a_root_that_is_not_read_only(quilt: RootFS) -> None:
    base_dir = quilt.base_dir

    class NoReadOnly(FaultySyscalls):
        """Pretends the read-only remount worked (a kernel ignoring it)."""

        def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
            if not flags & MS_REMOUNT:
                super().mount(source, target, fstype, flags, data)

    verdict = RootFS(base_dir, backend="quilt", syscalls=NoReadOnly()).probe("quilt")
    assert not verdict.supported
    assert verdict.reason is not None and "EROFS" in verdict.reason
    assert_base_dir_clean(base_dir)
