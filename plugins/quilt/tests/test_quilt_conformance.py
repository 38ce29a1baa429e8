"""rootfs-core's conformance suite, adopted as any third-party backend would."""

from rootfs_core.testing.conformance import BackendConformance


class TestQuiltConformance(BackendConformance):
    backend = "quilt"


class TestQuiltConformanceSimulated(BackendConformance):
    backend = "quilt"
    real_mounts = False
