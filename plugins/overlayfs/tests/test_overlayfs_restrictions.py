"""A root never grants more than the prototype's own mount: on a prototype
mounted nodev,nosuid, the overlay root is nodev,nosuid too, so its device
nodes do not open and its set-user-id programs do not elevate."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from rootfs_core import RootFS
from rootfs_core.testing.checks import mount_options, open_errno
from rootfs_core.testing.fixtures import RESTRICTED_DEVICE, RESTRICTED_SETUID

DEVICE = RESTRICTED_DEVICE
SETUID = RESTRICTED_SETUID


@pytest.mark.parametrize("size", [None, "8M"])
def test_a_root_keeps_the_prototypes_nodev_and_nosuid(
    rfs: RootFS, restricted_prototype: str, size: str | None
) -> None:
    with rfs.generated(restricted_prototype, size=size) as root:
        device = os.path.join(root, DEVICE)
        st = os.stat(device)
        # The node is there, as it is in the prototype...
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
        # ... and does not open: the root is nodev like the prototype's mount.
        assert open_errno(device) == errno.EACCES
        # The program keeps its set-user-id bit; the mount makes it inert.
        assert os.stat(os.path.join(root, SETUID)).st_mode & 0o7777 == 0o4755
        assert {"nodev", "nosuid"} <= mount_options(root)
        assert os.statvfs(root).f_flag & (os.ST_NODEV | os.ST_NOSUID) == os.ST_NODEV | os.ST_NOSUID
