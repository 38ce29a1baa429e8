"""A root never grants more than the prototype's own mount: on a prototype
mounted nodev,nosuid, every mount of a quilt (its read-only root and each
writable copy, though the copies live on the base directory's filesystem)
is nodev,nosuid too, so device nodes do not open and set-user-id programs
do not elevate."""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Iterator

import pytest

from rootfs_core import RootFS
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import mounts_below
from rootfs_core.testing.fixtures import remove_scratch, scratch_dir
from rootfs_core.testing.prototypes import make_tiny_prototype

MS_NOSUID = os.ST_NOSUID  # statvfs's ST_* bits have mount(2)'s MS_* values
MS_NODEV = os.ST_NODEV
DEVICE = "dev/null"  # a char device 1,3, in dev/: one of the quilt's writable copies
SETUID = "sbin/suid-true"  # a set-user-id root copy of /bin/true, in a writable copy too


def mount_options(point: str) -> set[str]:
    """The per-mount options of mount point ``point`` in /proc/self/mountinfo
    (the topmost mount there)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        found = [line.split()[5] for line in fh if line.split()[4] == point]
    assert found, f"{point} is not a mount point"
    return set(found[-1].split(","))


def open_errno(path: str) -> int | None:
    """The errno of opening ``path`` for reading and writing, None if it
    opened (then it is closed at once, so the root is not left busy)."""
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError as exc:
        return exc.errno
    os.close(fd)
    return None


@pytest.fixture
def restricted_prototype(leak_guard: None) -> Iterator[str]:
    """A prototype on a tmpfs mounted nodev,nosuid, holding a char device
    node and a set-user-id root program."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs and making a device node need root")
    holder = scratch_dir("restricted-")
    mnt = os.path.join(holder, "mnt")
    os.mkdir(mnt)
    LinuxSyscalls().mount("rootfs-test", mnt, "tmpfs", MS_NODEV | MS_NOSUID, "mode=0755")
    try:
        proto = make_tiny_prototype(os.path.join(mnt, "prototype"))
        device = os.path.join(proto, DEVICE)
        if not os.path.lexists(device):
            os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        true = shutil.which("true") or "/bin/true"
        shutil.copyfile(true, os.path.join(proto, SETUID))
        os.chown(os.path.join(proto, SETUID), 0, 0)
        os.chmod(os.path.join(proto, SETUID), 0o4755)
        assert {"nodev", "nosuid"} <= mount_options(mnt)
        yield proto
    finally:
        LinuxSyscalls().umount(mnt, UMOUNT_NOFOLLOW)
        remove_scratch(holder)


def test_a_quilt_keeps_the_prototypes_nodev_and_nosuid(quilt: RootFS, restricted_prototype: str) -> None:
    with quilt.generated(restricted_prototype) as root:
        device = os.path.join(root, DEVICE)
        assert os.path.join(root, "dev") in mounts_below(root)  # a writable copy
        st = os.stat(device)
        # The node was copied with dev/...
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
        # ... and does not open: the copy's bind is nodev like the prototype's mount.
        assert open_errno(device) == errno.EACCES
        # The program keeps its set-user-id bit in the copy; the mount makes it inert.
        assert os.stat(os.path.join(root, SETUID)).st_mode & 0o7777 == 0o4755
        # Every mount of the root, the read-only bind and each copy's bind.
        points = mounts_below(root)
        assert len(points) == 1 + 7
        for point in points:
            assert {"nodev", "nosuid"} <= mount_options(point), point
            assert os.statvfs(point).f_flag & (os.ST_NODEV | os.ST_NOSUID) == os.ST_NODEV | os.ST_NOSUID
        # The copy itself lies on the base directory's filesystem: when that
        # one allows devices, only the bind's nodev keeps the node shut.
        copy = os.path.join(os.path.dirname(root), "rw", "0-dev", "null")
        assert os.stat(copy).st_rdev == os.makedev(1, 3)
        if not os.statvfs(copy).f_flag & os.ST_NODEV:
            assert open_errno(copy) is None
