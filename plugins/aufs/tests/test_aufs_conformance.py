"""rootfs-core's conformance suite: on this kernel (no aufs) the real-mount
class skips with the probe's reason; the simulated one proves the lifecycle."""

from rootfs_core.testing.conformance import BackendConformance


class TestAufsConformance(BackendConformance):
    backend = "aufs"


class TestAufsConformanceSimulated(BackendConformance):
    backend = "aufs"
    real_mounts = False
