"""rootfs-core's conformance suite (``rootfs_core.testing.conformance``),
run here against every in-tree backend, all installed together as on a host:
on real mounts (skipped, with the probe's reason, where a backend cannot
work: aufs on a mainline kernel) and on simulated ones, with the
fault-injection matrix (every step of generate and of remove fails in turn)
among its cases. Each backend's own tests adopt the same suite; this run
proves it holds with every other backend installed beside it, and that no
installed backend goes without it.
"""

from __future__ import annotations

from rootfs_core.hookspecs import BAND_COPY, BAND_KERNEL_UNION, BAND_OTHER_UNION
from rootfs_core.registry import Registry
from rootfs_core.testing.conformance import BackendConformance

# Best first: the selection order the README's table of backends documents.
IN_TREE = ("overlayfs", "aufs", "fuse-overlayfs", "quilt")


class TestOverlayfs(BackendConformance):
    backend = "overlayfs"
    band = BAND_KERNEL_UNION


class TestOverlayfsSimulated(TestOverlayfs):
    real_mounts = False


class TestAufs(BackendConformance):
    backend = "aufs"
    band = BAND_OTHER_UNION


class TestAufsSimulated(TestAufs):
    real_mounts = False


class TestFuseOverlayfs(BackendConformance):
    backend = "fuse-overlayfs"
    band = BAND_OTHER_UNION


class TestFuseOverlayfsSimulated(TestFuseOverlayfs):
    real_mounts = False


class TestQuilt(BackendConformance):
    backend = "quilt"
    band = BAND_COPY


class TestQuiltSimulated(TestQuilt):
    real_mounts = False


def test_the_installed_backends_are_the_matrix_and_all_load() -> None:
    """Each in-tree backend has the suite run above on real and on simulated
    mounts; a backend installed beside them that none runs it against, or an
    in-tree one missing or failing to load, fails here instead of going
    untested."""
    classes = [c for c in globals().values() if isinstance(c, type) and issubclass(c, BackendConformance)]
    matrix = {(c.backend, c.real_mounts) for c in classes if c is not BackendConformance}
    assert matrix == {(name, real) for name in IN_TREE for real in (True, False)}
    backends = Registry.discover().backends
    assert {name: backend.error for name, backend in backends.items()} == dict.fromkeys(IN_TREE)


def test_the_selection_order_is_the_documented_one() -> None:
    assert [backend.name for backend in Registry.discover().by_priority()] == list(IN_TREE)
