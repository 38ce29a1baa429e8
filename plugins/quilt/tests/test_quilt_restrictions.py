"""A root never grants more than the prototype's own mount: on a prototype
mounted nodev,nosuid, every mount of a quilt (its read-only root and each
writable copy, though the copies live on the base directory's filesystem)
is nodev,nosuid too, so device nodes do not open and set-user-id programs
do not elevate."""

from __future__ import annotations

import errno
import os
import stat

from rootfs_core import RootFS
from rootfs_core.testing.checks import mount_options, mounts_below, open_errno
from rootfs_core.testing.fixtures import RESTRICTED_DEVICE, RESTRICTED_SETUID

DEVICE = RESTRICTED_DEVICE
SETUID = RESTRICTED_SETUID


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
