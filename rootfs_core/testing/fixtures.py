"""pytest fixtures for anything that mounts (loaded through the ``pytest11``
entry point of rootfs-core, so every backend's tests have them).

``leak_guard`` fails a test that leaves a new mount anywhere; ``base_dir``
fails one that leaves a record, a marker, an instance directory or a mount
in it; ``prototype`` fails one that changed the prototype by a single bit.
"""

from __future__ import annotations

import ctypes
import os
import tempfile
from collections.abc import Iterator

import pytest

from rootfs_core.sample import build_sample, find_busybox
from rootfs_core.syscalls import MS_PRIVATE, MS_REC, UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import mount_points, mounts_below, tree_checksum
from rootfs_core.testing.prototypes import make_tiny_prototype

_CLONE_NEWNS = 0x00020000
SCRATCH_TOP = "/tmp/rootfs-tests"
# One directory per test process, so that test runs side by side (two
# developers, xdist workers) never take each other's mounts for leaks.
SCRATCH = os.path.join(SCRATCH_TOP, str(os.getpid()))


def _someone_elses(point: str) -> bool:
    return point.startswith(SCRATCH_TOP + "/") and not (point + "/").startswith(SCRATCH + "/")


@pytest.fixture
def leak_guard() -> Iterator[None]:
    """Fail the test if it leaves a mount that was not there before it,
    anywhere on the host (an escaping mount is the worst leak of all).

    Leaks inside this process's scratch directory are unmounted (deepest
    first) so one leak does not poison the rest of the run; the test still
    fails. A leak elsewhere is only reported: it is not ours to touch.
    """
    before = set(mount_points())
    yield
    leaked = [p for p in mount_points() if p not in before and not _someone_elses(p)]
    for point in sorted(leaked, key=len, reverse=True):
        if (point + "/").startswith(SCRATCH + "/"):
            try:
                LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)
            except OSError:
                pass
    assert not leaked, f"test leaked mounts: {leaked}"


def scratch_dir(prefix: str) -> str:
    """A fresh directory for one test, under this process's scratch root."""
    os.makedirs(SCRATCH, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=SCRATCH)


def assert_base_dir_clean(base: str) -> None:
    """Nothing of any instance is left in ``base``."""
    assert mounts_below(base) == [], f"mounts left in {base}: {mounts_below(base)}"
    leftovers = sorted(set(os.listdir(base)) - {".rootfs"})
    assert leftovers == [], f"instance directories left in {base}: {leftovers}"
    state = os.path.join(base, ".rootfs")
    if os.path.isdir(state):
        for sub in ("records", "incomplete"):
            left = os.listdir(os.path.join(state, sub)) if os.path.isdir(os.path.join(state, sub)) else []
            assert left == [], f"{sub} left in {base}: {left}"


def remove_scratch(path: str) -> None:
    """Delete a test's scratch directory, but never through a mount."""
    if os.path.isdir(path) and not mounts_below(path):
        LinuxSyscalls().remove_tree(path)


@pytest.fixture
def base_dir(leak_guard: None) -> Iterator[str]:
    """An empty read-write base directory; must be clean again at teardown."""
    base = scratch_dir("base-")
    yield base
    try:
        assert_base_dir_clean(base)
    finally:
        remove_scratch(base)


@pytest.fixture
def prototype() -> Iterator[str]:
    """A tiny prototype with every kind of file; must be unchanged at teardown."""
    holder = scratch_dir("proto-")
    path = make_tiny_prototype(os.path.join(holder, "prototype"))
    before = tree_checksum(path)
    yield path
    try:
        assert tree_checksum(path) == before, "the prototype was modified"
    finally:
        remove_scratch(holder)


@pytest.fixture(autouse=True)
def _no_caches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests probe and discover for real every time: a verdict or an
    entry-point list cached by another run must not decide the outcome."""
    monkeypatch.setenv("ROOTFS_CACHE", "")


@pytest.fixture(scope="session")
def _busybox_tree() -> Iterator[str]:
    if find_busybox() is None:
        pytest.skip("busybox-static is not installed (apt-get install busybox-static)")
    holder = scratch_dir("busybox-")
    path = os.path.join(holder, "prototype")
    build_sample(path)
    yield path
    remove_scratch(holder)


@pytest.fixture
def busybox_prototype(_busybox_tree: str) -> Iterator[str]:
    """A busybox prototype (built once per session); must be unchanged at teardown."""
    before = tree_checksum(_busybox_tree)
    yield _busybox_tree
    assert tree_checksum(_busybox_tree) == before, "the busybox prototype was modified"


def pytest_configure(config: pytest.Config) -> None:
    """As root, run the whole test session in a mount namespace of its own.

    The session then sees only the mounts that existed when it started and
    the ones it makes, so two test runs side by side never take each other's
    mounts for leaks, and a mount a failed test leaks disappears with the
    session instead of staying on the host. ``leak_guard`` still fails the
    test that leaked it. ``ROOTFS_TEST_HOST_NAMESPACE=1`` turns this off.
    """
    if os.geteuid() != 0 or os.environ.get("ROOTFS_TEST_HOST_NAMESPACE") == "1":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        return  # already confined somewhere that forbids it: test in place
    # Our mounts must not propagate back to the host's namespace, nor its to us.
    LinuxSyscalls().mount("none", "/", "", MS_REC | MS_PRIVATE, "")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop this process's scratch root if every test cleaned up after itself."""
    try:
        os.rmdir(SCRATCH)
    except OSError:
        pass
