"""rootfs-core's conformance suite: on this kernel (no aufs) the real-mount
class skips with the probe's reason; the simulated one proves the lifecycle."""

from rootfs_core.hookspecs import BAND_OTHER_UNION
from rootfs_core.testing.conformance import BackendConformance


class TestAufsConformance(BackendConformance):
    backend = "aufs"
    band = BAND_OTHER_UNION


class TestAufsConformanceSimulated(BackendConformance):
    backend = "aufs"
    band = BAND_OTHER_UNION
    real_mounts = False
