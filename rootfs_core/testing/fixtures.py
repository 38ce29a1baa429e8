"""pytest fixtures for anything that mounts: an opt-in pytest plugin.

Installing rootfs-core does not load it (it has no ``pytest11`` entry point),
because it changes the whole session: run as root, the session moves into a
mount namespace of its own, and every test runs with ``ROOTFS_CACHE`` empty.
A test suite opts in with one line, either in the rootdir's top-level
``conftest.py``::

    pytest_plugins = ["rootfs_core.testing.fixtures"]

or as ``-p rootfs_core.testing.fixtures`` on the command line (or in
``addopts``, as rootfs's own suites do in pyproject.toml).
``python -m rootfs_core.testing`` loads it for the conformance suite.

``leak_guard`` fails a test that leaves a new mount anywhere; ``base_dir``
fails one that leaves a record, a marker, an instance directory or a mount
in it; ``prototype`` fails one that changed the prototype by a single bit.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator

import pytest

# The conformance suite's assertions show their values when they fail only
# if pytest rewrites them, which it does by itself for this plugin alone.
pytest.register_assert_rewrite("rootfs_core.testing.conformance", "rootfs_core.testing.checks")

from rootfs_core.sample import build_sample, find_busybox  # noqa: E402
from rootfs_core.syscalls import MS_PRIVATE, MS_REC, UMOUNT_NOFOLLOW, LinuxSyscalls  # noqa: E402
from rootfs_core.testing.checks import (  # noqa: E402
    instance_mounts,
    mount_options,
    mount_points,
    mounts_below,
    tree_checksum,
)
from rootfs_core.testing.prototypes import make_tiny_prototype  # noqa: E402

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
    host = _host_state()
    yield
    leaked = [p for p in mount_points() if p not in before and not _someone_elses(p)]
    for point in sorted(leaked, key=len, reverse=True):
        if (point + "/").startswith(SCRATCH + "/"):
            try:
                LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)
            except OSError:
                pass
    assert not leaked, f"test leaked mounts: {leaked}"
    after = _host_state()
    changed = {path: (was, after[path]) for path, was in host.items() if was != after[path]}
    assert not changed, f"the test changed host files (type/mode, owner, device): {changed}"


# Host files a root's prototype has namesakes of (a tiny prototype has a
# dev/null of mode 0644): a mount or copy that escapes its root would change
# them first.
_HOST_FILES = ("/", "/dev", "/dev/null", "/dev/zero", "/dev/full", "/dev/tty", "/etc", "/etc/passwd", "/tmp")


def _host_state() -> dict[str, tuple[int, int, int, int]]:
    state = {}
    for path in _HOST_FILES:
        try:
            st = os.lstat(path)
            state[path] = (st.st_mode, st.st_uid, st.st_gid, st.st_rdev)
        except OSError:
            state[path] = (0, 0, 0, 0)
    return state


def scratch_dir(prefix: str) -> str:
    """A fresh directory for one test, under this process's scratch root."""
    os.makedirs(SCRATCH, exist_ok=True)
    return tempfile.mkdtemp(prefix=prefix, dir=SCRATCH)


def assert_base_dir_clean(base: str) -> None:
    """Nothing of any instance is left in ``base`` (its own private mount,
    which rootfs keeps, is not an instance's)."""
    assert instance_mounts(base) == [], f"mounts left in {base}: {instance_mounts(base)}"
    leftovers = sorted(set(os.listdir(base)) - {".rootfs"})
    assert leftovers == [], f"instance directories left in {base}: {leftovers}"
    state = os.path.join(base, ".rootfs")
    if os.path.isdir(state):
        for sub in ("records", "incomplete"):
            left = os.listdir(os.path.join(state, sub)) if os.path.isdir(os.path.join(state, sub)) else []
            assert left == [], f"{sub} left in {base}: {left}"


def release_base_dirs(path: str) -> None:
    """Unmount the private mounts rootfs made of the base directories at or
    below ``path`` (``rootfs_core.basedir``), once nothing is mounted in
    them: a test's leftover instance mount stays, and fails the test."""
    for point in sorted(mounts_below(path), key=len, reverse=True):
        if os.path.isdir(os.path.join(point, ".rootfs")) and mounts_below(point) == [point]:
            LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)


def remove_scratch(path: str) -> None:
    """Delete a test's scratch directory, but never through a mount."""
    if not os.path.isdir(path):
        return
    release_base_dirs(path)
    if not mounts_below(path):
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


# In ``restricted_prototype``: a char device 1,3 and a set-user-id root
# program, both in directories every in-tree backend makes writable or shows.
RESTRICTED_DEVICE = "dev/null"
RESTRICTED_SETUID = "sbin/suid-true"


@pytest.fixture
def restricted_prototype(leak_guard: None) -> Iterator[str]:
    """A tiny prototype on a tmpfs mounted ``nodev,nosuid``, holding a
    device node (``RESTRICTED_DEVICE``) and a set-user-id root program
    (``RESTRICTED_SETUID``): a root of it must grant neither."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs and making a device node need root")
    holder = scratch_dir("restricted-")
    mnt = os.path.join(holder, "mnt")
    os.mkdir(mnt)
    LinuxSyscalls().mount("rootfs-test", mnt, "tmpfs", os.ST_NODEV | os.ST_NOSUID, "mode=0755")
    try:
        proto = make_tiny_prototype(os.path.join(mnt, "prototype"))
        device = os.path.join(proto, RESTRICTED_DEVICE)
        if not os.path.lexists(device):
            os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        program = os.path.join(proto, RESTRICTED_SETUID)
        shutil.copyfile(shutil.which("true") or "/bin/true", program)
        os.chown(program, 0, 0)
        os.chmod(program, 0o4755)
        assert {"nodev", "nosuid"} <= mount_options(mnt)
        yield proto
    finally:
        LinuxSyscalls().umount(mnt, UMOUNT_NOFOLLOW)
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

    ``/`` is made rprivate in that namespace, so nothing propagates between
    it and the host. ``ROOTFS_TEST_PROPAGATION=shared`` then makes it
    rshared, as systemd makes ``/`` on a real host, so that every test meets
    a real host's propagation (a bind of a shared mount joins its peer group;
    a mount below one reaches its peers and slaves). The namespace is still
    our own (cut from the host first), so nothing reaches the real host. Run
    ``ROOTFS_TEST_PROPAGATION=shared pytest tests/integration``, or
    ``tox -e integration-shared``; ``private`` (the default) is the other
    value. A single test can ask for shared propagation whatever the mode
    with ``rootfs_core.testing.neighbours.shared_namespace``.
    """
    propagation = os.environ.get("ROOTFS_TEST_PROPAGATION", "private") or "private"
    if propagation not in ("private", "shared"):
        raise pytest.UsageError(f"ROOTFS_TEST_PROPAGATION={propagation!r}: expected 'private' or 'shared'")
    if os.geteuid() != 0:
        return
    if os.environ.get("ROOTFS_TEST_HOST_NAMESPACE") == "1":
        if propagation == "shared":
            # Never change the propagation of a namespace that is not the session's own.
            raise pytest.UsageError("ROOTFS_TEST_PROPAGATION=shared needs a namespace of the session's own")
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(_CLONE_NEWNS) != 0:
        if propagation == "shared":
            err = ctypes.get_errno()
            raise pytest.UsageError(
                f"ROOTFS_TEST_PROPAGATION=shared: no mount namespace of our own ({os.strerror(err)})"
            )
        return  # already confined somewhere that forbids it: test in place
    # Our mounts must not propagate back to the host's namespace, nor its to us.
    LinuxSyscalls().mount("none", "/", "", MS_REC | MS_PRIVATE, "")
    if propagation == "shared":
        from rootfs_core.syscalls import MS_SHARED

        # Every mount gets a new peer group of its own, shared with nothing
        # outside this namespace (it is private from the host since above).
        LinuxSyscalls().mount("none", "/", "", MS_REC | MS_SHARED, "")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Drop this process's scratch root if every test cleaned up after itself."""
    try:
        os.rmdir(SCRATCH)
    except OSError:
        pass
