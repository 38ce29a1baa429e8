"""The behaviour every backend must have: rootfs-core's conformance suite,
against real overlay mounts and against simulated ones."""

from __future__ import annotations

from typing import ClassVar

from rootfs_core.hookspecs import BAND_KERNEL_UNION
from rootfs_core.testing.conformance import BackendConformance


class TestConformance(BackendConformance):
    backend = "overlayfs"
    band = BAND_KERNEL_UNION


class TestConformanceFaked(BackendConformance):
    backend = "overlayfs"
    band = BAND_KERNEL_UNION
    real_mounts = False


class TestConformanceSized(BackendConformance):
    """The same with ``size``: upper and work on a tmpfs of their own."""

    backend = "overlayfs"
    band = BAND_KERNEL_UNION
    options: ClassVar[dict[str, str]] = {"size": "16M"}
