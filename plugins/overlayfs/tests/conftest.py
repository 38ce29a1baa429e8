"""Fixtures for the overlayfs backend's tests: real mounts, as root.

rootfs-core's fixtures (``base_dir``, ``prototype``, ``busybox_prototype``,
``leak_guard``) come through its pytest11 entry point.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from rootfs_core import RootFS


@pytest.fixture
def rfs(base_dir: str) -> Iterator[RootFS]:
    """overlayfs forced on ``base_dir``. A test that leaves an instance fails,
    but its instances are removed first so later tests start clean."""
    rootfs = RootFS(base_dir, backend="overlayfs")
    yield rootfs
    left = [i.root for i in rootfs.instances()]
    for root in left:
        rootfs.remove(root)
    assert not left, f"test left instances: {left}"
