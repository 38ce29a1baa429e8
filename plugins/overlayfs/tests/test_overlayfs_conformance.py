"""The behaviour every backend must have: rootfs-core's conformance suite,
against real overlay mounts and against simulated ones."""

from __future__ import annotations

from typing import ClassVar

from rootfs_core.testing.conformance import BackendConformance


class TestConformance(BackendConformance):
    backend = "overlayfs"


class TestConformanceFaked(BackendConformance):
    backend = "overlayfs"
    real_mounts = False


class TestConformanceSized(BackendConformance):
    """The same with ``size``: upper and work on a tmpfs of their own."""

    backend = "overlayfs"
    options: ClassVar[dict[str, str]] = {"size": "16M"}
