"""rootfs-core's conformance suite, adopted as any third-party backend would."""

from rootfs_core.hookspecs import BAND_COPY
from rootfs_core.testing.conformance import BackendConformance


class TestQuiltConformance(BackendConformance):
    backend = "quilt"
    band = BAND_COPY


class TestQuiltConformanceSimulated(BackendConformance):
    backend = "quilt"
    band = BAND_COPY
    real_mounts = False
