"""The backend as root: what it says of itself, a root's life from generate to
remove (no mount, directory or daemon left), its daemon dying or hanging, and
the paths it must escape or refuse."""

from __future__ import annotations

import os
import signal
import stat
from collections.abc import Callable

import pytest
from rootfs_fuse_overlayfs import backend

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.hookspecs import BAND_OTHER_UNION
from rootfs_core.syscalls import LinuxSyscalls
from rootfs_core.testing.checks import mounts_below
from rootfs_core.testing.fixtures import assert_base_dir_clean, remove_scratch, scratch_dir
from rootfs_core.testing.prototypes import make_tiny_prototype

Daemons = Callable[[str], list[str]]


def fstype_of(mount_point: str) -> str:
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as fh:
        for line in fh:
            fields = line.split()
            if fields[4] == mount_point:
                return fields[fields.index("-") + 1]
    raise AssertionError(f"{mount_point} is not mounted")


def is_whiteout(path: str) -> bool:
    """fuse-overlayfs marks a deleted name with a 0/0 character device, or
    with a ``.wh.`` file where it cannot make one."""
    if os.path.lexists(path):
        st = os.lstat(path)
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    head, tail = os.path.split(path)
    return os.path.lexists(os.path.join(head, ".wh." + tail))


def test_priority_sits_in_the_other_union_band_below_kernel_overlay_and_aufs() -> None:
    info = backend.rootfs_backend_info()
    assert info.priority == 220 and info.priority in BAND_OTHER_UNION
    assert info.priority < 250  # aufs
    assert info.options == {}


def test_supported_here(rfs: RootFS) -> None:
    status = {s.name: s for s in rfs.backends()}["fuse-overlayfs"]
    assert (status.supported, status.reason, status.priority) == (True, None, 220)


def test_generate_write_delete_read_then_remove_leaves_nothing(
    rfs: RootFS, base_dir: str, prototype: str, daemons: Daemons
) -> None:
    root = rfs.generate(prototype)
    instance = os.path.dirname(root)
    assert mounts_below(base_dir) == [root]
    assert fstype_of(root) == "fuse.fuse-overlayfs"
    assert len(daemons(root)) == 1
    # read: the prototype, every kind of file
    assert sorted(os.listdir(root)) == sorted(os.listdir(prototype))
    with open(f"{root}/etc/deep/er/file", "rb") as fh:
        assert fh.read() == b"deep\n"
    assert os.readlink(f"{root}/bin") == "usr/bin"
    assert stat.S_ISFIFO(os.lstat(f"{root}/dev/fifo").st_mode)
    # write: a new file and a changed one
    with open(f"{root}/etc/new", "wb") as fh:
        fh.write(b"new\n")
    with open(f"{root}/etc/passwd", "ab") as fh:
        fh.write(b"user:x:1000:1000::/home/user:/bin/sh\n")
    # delete: a file and a whole prototype directory
    os.unlink(f"{root}/etc/hostname")
    os.unlink(f"{root}/etc/deep/er/file")
    os.rmdir(f"{root}/etc/deep/er")
    assert sorted(os.listdir(f"{root}/etc")) == ["deep", "hostname.link", "new", "passwd"]
    with open(f"{root}/etc/passwd", "rb") as fh:
        assert fh.read().endswith(b"/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    # the changes are in the upper layer, the prototype is untouched
    assert is_whiteout(f"{instance}/upper/etc/hostname")
    assert is_whiteout(f"{instance}/upper/etc/deep/er")
    assert os.path.isfile(f"{prototype}/etc/hostname") and not os.path.exists(f"{prototype}/etc/new")
    rfs.remove(root)
    assert not os.path.exists(instance)
    assert mounts_below(base_dir) == []
    assert daemons(base_dir) == []


def test_root_shows_the_mode_and_owner_of_the_prototype_root(rfs: RootFS, leak_guard: None) -> None:
    holder = scratch_dir("owner-")
    try:
        proto = make_tiny_prototype(os.path.join(holder, "prototype"))
        os.chown(proto, 1234, 5678)
        os.chmod(proto, 0o750)
        root = rfs.generate(proto)
        st = os.stat(root)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o750)
        rfs.remove(root)
    finally:
        remove_scratch(holder)


def test_instances_are_isolated(rfs: RootFS, prototype: str) -> None:
    first, second = rfs.generate(prototype), rfs.generate(prototype)
    with open(f"{first}/etc/only-first", "wb") as fh:
        fh.write(b"1\n")
    os.unlink(f"{second}/etc/hostname")
    assert not os.path.exists(f"{second}/etc/only-first")
    assert os.path.isfile(f"{first}/etc/hostname")
    rfs.remove(first)
    assert os.path.isfile(f"{second}/home/readme")  # the other one still works
    rfs.remove(second)


def test_remove_twice_is_fine(rfs: RootFS, prototype: str) -> None:
    root = rfs.generate(prototype)
    rfs.remove(root)
    rfs.remove(root)


def test_root_of_a_killed_daemon_is_still_removed(rfs: RootFS, base_dir: str, prototype: str) -> None:
    root = rfs.generate(prototype)
    [pid] = backend.daemons_serving(root)
    os.kill(pid, signal.SIGKILL)
    rfs.remove(root)
    assert_base_dir_clean(base_dir)


class StopDaemonToUnmount(LinuxSyscalls):
    """Stops the daemon just before unmounting for real, so it cannot exit: a
    daemon that hangs on its way out. (Stopped any earlier, it would hang every
    process that looks at its mount, the remove first; a stopped daemon does
    not keep fusermount3 -u from unmounting.)"""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def fuse_unmount(self, target: str) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        super().fuse_unmount(target)


def test_daemon_that_does_not_exit_fails_clearly_and_keeps_the_record(
    rfs: RootFS, base_dir: str, prototype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "DAEMON_EXIT_TIMEOUT", 0.3)
    root = rfs.generate(prototype)
    [pid] = backend.daemons_serving(root)
    try:
        with pytest.raises(RootFSError) as exc:
            RootFS(base_dir, syscalls=StopDaemonToUnmount(pid)).remove(root)
        assert exc.value.error_id is ErrorId.ErrUnmountRoot
        assert f"(pid {pid})" in str(exc.value) and f"kill {pid}" in str(exc.value)
        assert [i.root for i in rfs.instances()] == [root]
        assert os.path.isdir(f"{os.path.dirname(root)}/upper")  # nothing deleted under a live daemon
    finally:
        os.kill(pid, signal.SIGCONT)
    rfs.remove(root)
    assert_base_dir_clean(base_dir)


def test_paths_with_commas_and_backslashes(rfs: RootFS, leak_guard: None) -> None:
    """libfuse splits -o at ',' and reads '\\' as an escape; both are escaped."""
    holder = scratch_dir("odd-")
    try:
        proto = make_tiny_prototype(os.path.join(holder, "a,b\\c d=e"))
        root = rfs.generate(proto)
        assert sorted(os.listdir(root)) == sorted(os.listdir(proto))
        rfs.remove(root)
    finally:
        remove_scratch(holder)


def test_prototype_path_with_a_colon_is_refused(rfs: RootFS, base_dir: str, leak_guard: None) -> None:
    holder = scratch_dir("colon-")
    try:
        proto = make_tiny_prototype(os.path.join(holder, "a:b"))
        with pytest.raises(RootFSError) as exc:
            rfs.generate(proto)
        assert exc.value.error_id is ErrorId.ErrBindMountRoot
        assert "contains ':'" in str(exc.value)
        assert_base_dir_clean(base_dir)
    finally:
        remove_scratch(holder)


def test_probe_says_the_program_is_missing(
    as_root: None, base_dir: str, monkeypatch: pytest.MonkeyPatch, tmp_path: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    probe = RootFS(base_dir, backend="fuse-overlayfs").probe("fuse-overlayfs")
    assert not probe.supported
    assert probe.reason is not None and "apt-get install fuse-overlayfs" in probe.reason


def test_probe_says_the_fuse_device_is_missing(
    as_root: None, base_dir: str, prototype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "FUSE_DEVICE", "/dev/no-such-fuse")
    rfs = RootFS(base_dir, backend="fuse-overlayfs")
    probe = rfs.probe("fuse-overlayfs")
    assert not probe.supported
    assert probe.reason is not None and "ENOENT" in probe.reason and "modprobe fuse" in probe.reason
    with pytest.raises(RootFSError) as exc:
        rfs.generate(prototype)
    assert exc.value.error_id is ErrorId.ErrBackendUnsupported
