"""Fixtures for the fuse-overlayfs backend's tests: real FUSE mounts.

rootfs-core's fixtures (``base_dir``, ``prototype``, ``leak_guard``) come
through its pytest11 entry point. The tests that run as root skip when they
are not root or the program is missing; the rootless ones have their own
fixtures in their module.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator

import pytest

from rootfs_core import RootFS


def live_daemons(path: str) -> list[str]:
    """Command lines of the running fuse-overlayfs processes that mention
    ``path``, found independently of the backend (exited ones, zombies
    waiting for a parent to reap them, have an empty command line)."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")
        except OSError:
            continue
        if os.path.basename(argv[0]) == b"fuse-overlayfs" and any(os.fsencode(path) in arg for arg in argv):
            found.append(" ".join(os.fsdecode(arg) for arg in argv).strip())
    return found


@pytest.fixture
def daemons() -> Callable[[str], list[str]]:
    """``daemons(path)``: the live fuse-overlayfs processes mentioning ``path``."""
    return live_daemons


@pytest.fixture
def as_root() -> None:
    """Skip unless this is root with fuse-overlayfs installed."""
    if os.geteuid() != 0:
        pytest.skip("these tests mount as root (the rootless ones run as their own user)")
    if shutil.which("fuse-overlayfs") is None:
        pytest.skip("fuse-overlayfs is not installed (apt-get install fuse-overlayfs)")


@pytest.fixture
def rfs(as_root: None, base_dir: str) -> Iterator[RootFS]:
    """fuse-overlayfs forced on ``base_dir``. A test that leaves an instance
    fails, but its instances are removed first so later tests start clean; so
    does one that leaves a daemon."""
    rootfs = RootFS(base_dir, backend="fuse-overlayfs")
    yield rootfs
    left = [i.root for i in rootfs.instances()]
    for root in left:
        rootfs.remove(root)
    assert not left, f"test left instances: {left}"
    assert live_daemons(base_dir) == [], "test left fuse-overlayfs processes"
