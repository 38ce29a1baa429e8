"""A busy root is not removed (and nothing is deleted through it); tree
deletion never crosses a mount point."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.syscalls import MS_BIND, UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts, mounts_below
from rootfs_core.testing.fixtures import remove_scratch, scratch_dir


def test_busy_root_fails_clearly_then_removes(rfs: RootFS, prototype: str, base_dir: str) -> None:
    root = rfs.generate(prototype)
    holder = subprocess.Popen(["sleep", "60"], cwd=os.path.join(root, "tmp"))
    try:
        with pytest.raises(RootFSError) as info:
            rfs.remove(root)
        assert info.value.error_id is ErrorId.ErrRootBusy
        assert "busy" in str(info.value) and root + "/tmp" in str(info.value)
        (instance,) = rfs.instances()
        assert instance.state == "ready"  # nothing was undone
        assert mounts_below(root) == [root, root + "/etc", root + "/tmp"]
    finally:
        holder.kill()
        holder.wait()
    rfs.remove(root)
    assert instance_mounts(base_dir) == []


def test_remove_tree_refuses_to_cross_a_bind_mount(leak_guard: None) -> None:
    holder = scratch_dir("tree-")
    victim = os.path.join(holder, "victim")
    tree = os.path.join(holder, "tree")
    os.makedirs(os.path.join(tree, "a/b"))
    os.makedirs(victim)
    with open(os.path.join(victim, "precious"), "w") as fh:
        fh.write("keep me\n")
    sys = LinuxSyscalls()
    sys.mount(victim, os.path.join(tree, "a/b"), "", MS_BIND, "")  # same filesystem: same st_dev
    try:
        with pytest.raises(OSError) as info:
            sys.remove_tree(tree)
        assert info.value.errno == errno.EBUSY
        with open(os.path.join(victim, "precious")) as fh:
            assert fh.read() == "keep me\n"
        with pytest.raises(OSError):
            sys.remove_tree(os.path.join(tree, "a/b"))  # the mount point itself
    finally:
        sys.umount(os.path.join(tree, "a/b"), UMOUNT_NOFOLLOW)
    sys.remove_tree(tree)
    assert not os.path.exists(tree) and os.path.isfile(os.path.join(victim, "precious"))
    remove_scratch(holder)


def test_is_mountpoint_sees_same_filesystem_bind(leak_guard: None) -> None:
    holder = scratch_dir("bind-")
    target = os.path.join(holder, "t")
    source = os.path.join(holder, "s")
    os.mkdir(target)
    os.mkdir(source)
    sys = LinuxSyscalls()
    assert not sys.is_mountpoint(target)
    sys.mount(source, target, "", MS_BIND, "")
    try:
        assert sys.is_mountpoint(target)
        assert not os.path.ismount(target)  # why rootfs does not use it
    finally:
        sys.umount(target, UMOUNT_NOFOLLOW)
    assert not sys.is_mountpoint(target)
    remove_scratch(holder)


def test_a_busy_inner_mount_is_refused_before_anything_is_touched(
    rfs: RootFS, prototype: str, base_dir: str
) -> None:
    """A process in etc (mounted before tmp): without the check first, tmp's
    tmpfs would be unmounted, and its data lost, before etc said EBUSY."""
    root = rfs.generate(prototype)
    with open(os.path.join(root, "tmp/data"), "w") as fh:
        fh.write("keep\n")
    holder = subprocess.Popen(["sleep", "60"], cwd=os.path.join(root, "etc"))
    try:
        with pytest.raises(RootFSError) as info:
            rfs.remove(root)
        assert info.value.error_id is ErrorId.ErrRootBusy and root + "/etc" in str(info.value)
        assert mounts_below(root) == [root, root + "/etc", root + "/tmp"]
        with open(os.path.join(root, "tmp/data")) as fh:
            assert fh.read() == "keep\n"
        assert rfs.instance(root).state == "ready"  # type: ignore[union-attr]
    finally:
        holder.kill()
        holder.wait()
    rfs.remove(root)
    assert instance_mounts(base_dir) == []


def test_is_busy_does_not_unmount(leak_guard: None) -> None:
    holder = scratch_dir("busy-")
    sys_ = LinuxSyscalls()
    sys_.mount("tmpfs", holder, "tmpfs", 0, "size=1M")
    try:
        for _ in range(3):  # twice in a row would unmount, were the expiry mark not cleared
            assert sys_.is_busy(holder) is False
            assert sys_.is_mountpoint(holder)
        proc = subprocess.Popen(["sleep", "60"], cwd=holder)
        try:
            assert sys_.is_busy(holder) is True
        finally:
            proc.kill()
            proc.wait()
    finally:
        sys_.umount(holder, UMOUNT_NOFOLLOW)
    remove_scratch(holder)


def test_a_mount_someone_else_made_in_the_root_is_refused_before_anything(
    rfs: RootFS, prototype: str, base_dir: str
) -> None:
    """A volume bound onto the read-only part of a root with writable mounts
    (a quilt-like root) would make the root's unmount fail last, after the
    others: it is found first, and nothing is touched."""
    root = rfs.generate(prototype)
    volume = scratch_dir("volume-")
    sys_ = LinuxSyscalls()
    sys_.mount(volume, os.path.join(root, "usr"), "", MS_BIND, "")
    try:
        with pytest.raises(RootFSError) as info:
            rfs.remove(root)
        assert info.value.error_id is ErrorId.ErrRootBusy
        assert root + "/usr" in str(info.value) and "did not make" in str(info.value)
        assert mounts_below(root) == [root, root + "/etc", root + "/tmp", root + "/usr"]
        assert rfs.instance(root).state == "ready"  # type: ignore[union-attr]
    finally:
        sys_.umount(os.path.join(root, "usr"), UMOUNT_NOFOLLOW)
    rfs.remove(root)
    assert instance_mounts(base_dir) == []
    remove_scratch(volume)
