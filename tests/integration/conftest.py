"""Fixtures of the integration tests: real backends, real mounts, as root.

rootfs-core's own fixtures (``leak_guard``, ``base_dir``, ``prototype``,
``busybox_prototype``) come through its pytest11 entry point; helpers that
are not fixtures live in ``integration_support.py``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from integration_support import BACKENDS, SLOW

from rootfs_core import RootFS
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import mounts_below, tree_checksum
from rootfs_core.testing.fixtures import assert_base_dir_clean, release_base_dirs, remove_scratch, scratch_dir
from rootfs_core.testing.prototypes import make_tiny_prototype

MakePrototype = Callable[..., str]


@pytest.fixture(autouse=True)
def _plain_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No configuration file, forced backend or base directory from the
    environment of whoever runs the tests (the CLI runs inherit this)."""
    monkeypatch.delenv("ROOTFS_BACKEND", raising=False)
    monkeypatch.delenv("ROOTFS_BASE_DIR", raising=False)
    monkeypatch.setenv("ROOTFS_CONFIG", "/nonexistent/rootfs-config.toml")


@pytest.fixture(autouse=True)
def _slow_only_when_asked(request: pytest.FixtureRequest) -> None:
    """``@pytest.mark.slow`` tests run only with ``ROOTFS_SLOW=1``."""
    if request.node.get_closest_marker("slow") is not None and not SLOW:
        pytest.skip("slow: set ROOTFS_SLOW=1 to run")


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, base_dir: str) -> str:
    """Each real backend in turn, skipped (with its probe's reason) where it
    cannot work."""
    name: str = request.param
    if os.geteuid() != 0:
        pytest.skip("real mounts need root")
    probe = RootFS(base_dir, backend=name).probe(name)
    if not probe.supported:
        if name in ALWAYS_HERE:
            # Bind mounts and the kernel overlay work wherever these suites
            # run as root: a probe failing here is a bug (quilt's probe failed
            # under a shared /), never a reason to skip.
            pytest.fail(f"{name} must work here, but its probe says: {probe.reason}")
        pytest.skip(f"{name} is not supported here: {probe.reason}")
    return name


ALWAYS_HERE = ("overlayfs", "quilt")


@pytest.fixture
def scratch() -> Iterator[Callable[[str], str]]:
    """``scratch(prefix)``: a fresh directory of this test, deleted at teardown
    (never through a mount: a mount left below one fails the test)."""
    made: list[str] = []

    def make(prefix: str) -> str:
        made.append(scratch_dir(prefix))
        return made[-1]

    yield make
    try:
        for path in made:
            release_base_dirs(path)  # a base directory's own private mount is no leak
            assert mounts_below(path) == [], f"mounts left below {path}"
    finally:
        for path in made:
            remove_scratch(path)


@pytest.fixture
def make_prototype(scratch: Callable[[str], str]) -> Iterator[MakePrototype]:
    """``make_prototype(build=None, name="prototype", mutable=False)``: a tiny
    prototype (then ``build(path)`` if given) at ``<scratch>/<name>``. Unless
    ``mutable``, it must be bit-for-bit unchanged at teardown."""
    checked: list[tuple[str, str]] = []

    def make(
        build: Callable[[str], object] | None = None, name: str = "prototype", mutable: bool = False
    ) -> str:
        holder = scratch("proto-")
        # Built under a short name, then renamed: a socket cannot be bound at
        # a path longer than 107 bytes, and the tiny prototype has one.
        path = make_tiny_prototype(os.path.join(holder, "p"))
        if build is not None:
            build(path)
        if name != "p":
            os.rename(path, os.path.join(holder, name))
            path = os.path.join(holder, name)
        if not mutable:
            checked.append((path, tree_checksum(path)))
        return path

    yield make
    for path, checksum in checked:
        assert tree_checksum(path) == checksum, f"prototype {path!r} was modified"


@pytest.fixture
def small_base(leak_guard: None) -> Iterator[Callable[[str], str]]:
    """``small_base(tmpfs_options)``: a base directory on a tmpfs of its own
    (``size=8M``, ``nr_inodes=200`` ...), which must be clean at teardown,
    when the tmpfs is unmounted."""
    holders: list[str] = []

    def make(options: str) -> str:
        holder = scratch_dir("tmpfs-")
        LinuxSyscalls().mount("rootfs-test", holder, "tmpfs", 0, options)
        holders.append(holder)
        base = os.path.join(holder, "base")
        os.mkdir(base, 0o755)
        return base

    yield make
    try:
        for holder in holders:
            assert_base_dir_clean(os.path.join(holder, "base"))
    finally:
        for holder in holders:
            for point in reversed(mounts_below(holder)):  # the tmpfs itself last
                LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)
            remove_scratch(holder)


@pytest.fixture
def pretend_aufs(monkeypatch: pytest.MonkeyPatch) -> None:
    """aufs's probe says "supported" on this kernel (which has no aufs); its
    mount plan still runs, through whatever syscalls the RootFS has."""
    aufs = pytest.importorskip("rootfs_aufs.backend")
    from rootfs_core.hookspecs import Probe

    monkeypatch.setattr(aufs, "kernel_support", Probe.ok)
    monkeypatch.setattr(aufs, "try_union", lambda ctx: Probe.ok())
