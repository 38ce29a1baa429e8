"""Fixtures for the aufs backend's tests (rootfs-core's fixtures, such as
``base_dir`` and ``prototype``, come through its pytest11 entry point)."""

from __future__ import annotations

import pytest
from rootfs_aufs import backend

from rootfs_core import RootFS
from rootfs_core.hookspecs import Probe
from rootfs_core.testing.faults import FakeMounts


@pytest.fixture
def pretend_aufs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the probe say "supported" without a kernel that has aufs.

    The probe still runs its mount plan through the test's syscalls (so its
    calls are recorded, and its failures count); only the two questions
    FakeMounts cannot answer are answered here: does this kernel know aufs,
    and does the mounted union behave like one.
    """
    monkeypatch.setattr(backend, "kernel_support", Probe.ok)
    monkeypatch.setattr(backend, "try_union", lambda ctx: Probe.ok())


@pytest.fixture
def fake() -> FakeMounts:
    return FakeMounts()


@pytest.fixture
def rfs(base_dir: str, fake: FakeMounts, pretend_aufs: None) -> RootFS:
    """aufs forced, mounts simulated; the probe already run (so a test sees
    only the calls of the operation it makes)."""
    rootfs = RootFS(base_dir, backend="aufs", syscalls=fake)
    assert rootfs.selected_backend() == "aufs"
    fake.mount_calls.clear()
    fake.umount_calls.clear()
    return rootfs
