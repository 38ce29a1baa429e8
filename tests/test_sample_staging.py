"""``rootfs sample`` deletes what a stopped build left at ``DIR.building``
without ever deleting through a mount, and without following a symlink."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from rootfs_core import ErrorId, RootFSError, sample
from rootfs_core.sample import build_sample
from rootfs_core.syscalls import MS_BIND, UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.fixtures import remove_scratch, scratch_dir

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounts")


@pytest.fixture
def holder(leak_guard: None) -> Iterator[str]:
    path = scratch_dir("sample-")
    yield path
    remove_scratch(path)


@pytest.mark.parametrize("seen_first", [True, False], ids=["mount-table", "remove_tree"])
def test_a_mount_below_the_staging_tree_is_left_intact(
    holder: str, monkeypatch: pytest.MonkeyPatch, seen_first: bool
) -> None:
    """Refused with ErrRemoveMountDir naming the mount, whether the mount
    table shows it up front or only the deletion meets it (a mount made
    meanwhile): the mounted files survive and the mount stays."""
    if not seen_first:
        monkeypatch.setattr(sample, "mounts_below", lambda path: [], raising=False)
    target = os.path.join(holder, "proto")
    staging = target + ".building"
    os.makedirs(os.path.join(staging, "etc"))  # a build that stopped half-way
    point = os.path.join(staging, "mnt")
    os.mkdir(point)
    outside = os.path.join(holder, "outside")
    os.mkdir(outside)
    precious = os.path.join(outside, "precious")
    with open(precious, "w") as fh:
        fh.write("keep me\n")
    syscalls = LinuxSyscalls()
    syscalls.mount(outside, point, "", MS_BIND, "")
    try:
        with pytest.raises(RootFSError) as info:
            build_sample(target)
        assert info.value.error_id is ErrorId.ErrRemoveMountDir
        assert point in str(info.value)
        assert syscalls.is_mountpoint(point)
        assert os.path.exists(os.path.join(point, "precious"))
        with open(precious) as fh:
            assert fh.read() == "keep me\n"
        assert not os.path.lexists(target)
        if seen_first:  # refused before anything was deleted
            assert sorted(os.listdir(staging)) == ["etc", "mnt"]
    finally:
        syscalls.umount(point, UMOUNT_NOFOLLOW)


def test_a_mount_on_the_staging_directory_itself_is_left_intact(holder: str) -> None:
    target = os.path.join(holder, "proto")
    staging = target + ".building"
    os.mkdir(staging)
    outside = os.path.join(holder, "outside")
    os.mkdir(outside)
    with open(os.path.join(outside, "precious"), "w") as fh:
        fh.write("keep me\n")
    syscalls = LinuxSyscalls()
    syscalls.mount(outside, staging, "", MS_BIND, "")
    try:
        with pytest.raises(RootFSError) as info:
            build_sample(target)
        assert info.value.error_id is ErrorId.ErrRemoveMountDir
        assert staging in str(info.value)
        assert syscalls.is_mountpoint(staging)
        assert os.listdir(outside) == ["precious"]
    finally:
        syscalls.umount(staging, UMOUNT_NOFOLLOW)


@pytest.mark.parametrize("dangling", [False, True])
def test_a_symlink_at_the_staging_path_is_not_followed(holder: str, dangling: bool) -> None:
    victim = os.path.join(holder, "victim")
    if not dangling:
        os.mkdir(victim)
        with open(os.path.join(victim, "keep"), "w") as fh:
            fh.write("keep me\n")
    target = os.path.join(holder, "proto")
    os.symlink(victim, target + ".building")
    build_sample(target)
    if dangling:
        assert not os.path.lexists(victim)
    else:
        assert os.listdir(victim) == ["keep"]
    assert not os.path.islink(target)
    assert os.path.isfile(os.path.join(target, "etc", "passwd"))
    assert not os.path.lexists(target + ".building")


def test_a_stopped_build_is_replaced(holder: str) -> None:
    target = os.path.join(holder, "proto")
    os.makedirs(os.path.join(target + ".building", "half", "built"))
    build_sample(target)
    assert not os.path.lexists(os.path.join(target, "half"))
    assert os.path.isfile(os.path.join(target, "etc", "passwd"))
    assert not os.path.lexists(target + ".building")
