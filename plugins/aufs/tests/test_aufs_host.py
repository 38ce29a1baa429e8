"""What this host's kernel says about aufs, through the public API: the real
probe, the real listing of backends, and a forced generate that must fail
cleanly. On a kernel with aufs the "unsupported" tests skip (the real-mount
tests in test_aufs_real.py cover it instead)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Iterator

import pytest
from rootfs_aufs import backend

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.mounttable import filesystem_of
from rootfs_core.syscalls import MS_BIND, MS_PRIVATE, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts
from rootfs_core.testing.faults import FakeMounts
from rootfs_core.testing.fixtures import release_base_dirs, remove_scratch, scratch_dir


@pytest.fixture
def no_aufs() -> str:
    """The probe's reason on a kernel without aufs (skip on one with it)."""
    verdict = backend.kernel_support()
    if verdict.supported:
        pytest.skip("this kernel has aufs: the real-mount tests cover it")
    assert verdict.reason is not None
    return verdict.reason


def test_the_reason_names_the_kernel(no_aufs: str) -> None:
    assert no_aufs == f"{backend.NO_AUFS} ({platform.release()}); aufs is not in mainline Linux"


def test_backends_lists_aufs_as_unsupported_and_does_not_select_it(
    base_dir: str, no_aufs: str, no_forcing: None
) -> None:
    statuses = RootFS(base_dir).backends()
    (aufs,) = [s for s in statuses if s.name == "aufs"]
    assert (aufs.priority, aufs.supported, aufs.reason, aufs.selected) == (250, False, no_aufs, False)
    assert all(not s.selected or s.supported for s in statuses)


def test_forced_aufs_fails_clearly_and_leaves_nothing(
    base_dir: str, prototype: str, no_aufs: str, no_forcing: None
) -> None:
    rfs = RootFS(base_dir, backend="aufs")
    with pytest.raises(RootFSError) as caught:
        rfs.generate(prototype)
    assert caught.value.error_id is ErrorId.ErrBackendUnsupported
    assert no_aufs in caught.value.message
    assert caught.value.cleanup_errors == []
    assert rfs.instances() == []
    assert instance_mounts(base_dir) == []
    # base_dir's own teardown checks no directory or record is left either.


def test_forced_aufs_through_the_environment_fails_the_same_way(
    base_dir: str, prototype: str, no_aufs: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOTFS_BACKEND", "aufs")
    with pytest.raises(RootFSError) as caught:
        RootFS(base_dir).generate(prototype)
    assert caught.value.error_id is ErrorId.ErrBackendUnsupported
    assert no_aufs in caught.value.message


def rootfs_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The ``rootfs`` command, as a user runs it (the probe cache is off: see
    rootfs-core's ``_no_probe_cache`` fixture, whose variable the child inherits)."""
    return subprocess.run(
        [sys.executable, "-m", "rootfs_core.cli", *args], capture_output=True, text=True, check=False
    )


@pytest.fixture
def no_forcing(monkeypatch: pytest.MonkeyPatch) -> None:
    """No backend forced by the environment or a configuration file."""
    monkeypatch.delenv("ROOTFS_BACKEND", raising=False)
    monkeypatch.setenv("ROOTFS_CONFIG", "/nonexistent/rootfs-config.toml")


def test_cli_backends_lists_aufs_as_unsupported(base_dir: str, no_aufs: str, no_forcing: None) -> None:
    done = rootfs_cli("backends", "--base-dir", base_dir, "--json")
    assert done.returncode == 0, done.stderr
    (aufs,) = [row for row in json.loads(done.stdout) if row["name"] == "aufs"]
    assert aufs["priority"] == 250
    assert (aufs["supported"], aufs["reason"], aufs["selected"]) == (False, no_aufs, False)
    assert aufs["distribution"] == "rootfs-aufs"


def test_cli_forced_aufs_generate_fails_and_leaves_nothing(
    base_dir: str, prototype: str, no_aufs: str, no_forcing: None
) -> None:
    done = rootfs_cli("generate", "--backend", "aufs", "--base-dir", base_dir, prototype)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == f"rootfs: ErrBackendUnsupported: backend 'aufs' cannot work here: {no_aufs}\n"
    assert instance_mounts(base_dir) == []
    # base_dir's own teardown checks no directory or record is left either.


@pytest.fixture
def overlay_base(leak_guard: None) -> Iterator[str]:
    """A base directory on a real overlayfs mount (mainline, so always here)."""
    holder = scratch_dir("overlay-")
    layers = {name: os.path.join(holder, name) for name in ("lower", "upper", "work", "merged")}
    for path in layers.values():
        os.mkdir(path)
    LinuxSyscalls().mount(
        "overlay",
        layers["merged"],
        "overlay",
        0,
        f"lowerdir={layers['lower']},upperdir={layers['upper']},workdir={layers['work']}",
    )
    try:
        base = os.path.join(layers["merged"], "base")
        os.mkdir(base)
        yield base
    finally:
        # The base directory's own private mount (rootfs_core.basedir) lies
        # on the overlay: it goes first, or the overlay is busy.
        release_base_dirs(layers["merged"])
        LinuxSyscalls().umount(layers["merged"], 0)
        remove_scratch(holder)


def test_a_base_directory_on_overlay_is_detected_for_real(
    overlay_base: str, prototype: str, pretend_aufs: None
) -> None:
    """The real mount table shows the overlay; the verdict explains it, and a
    forced generate stops before making anything."""
    assert filesystem_of(overlay_base)[0] == "overlay"
    fake = FakeMounts()
    rfs = RootFS(overlay_base, backend="aufs", syscalls=fake)
    verdict = rfs.probe("aufs")
    assert not verdict.supported
    assert verdict.reason is not None
    assert "the base directory is on overlayfs" in verdict.reason
    # The probe's instance made the base directory's own private mount (a
    # bind on itself: rootfs_core.basedir), and nothing else.
    base_set_up = [(overlay_base, overlay_base, "", MS_BIND, "")]
    assert fake.mount_calls == base_set_up
    assert fake.propagation_calls == [(overlay_base, MS_PRIVATE)]
    with pytest.raises(RootFSError) as caught:
        rfs.generate(prototype)
    assert caught.value.error_id is ErrorId.ErrBackendUnsupported
    assert fake.mount_calls == base_set_up
    assert fake.propagation_calls == [(overlay_base, MS_PRIVATE)]
    assert instance_mounts(overlay_base) == []
    assert sorted(set(os.listdir(overlay_base)) - {".rootfs"}) == []
    assert rfs.instances() == []


def test_a_plain_base_directory_is_not_mistaken_for_a_union(base_dir: str) -> None:
    assert filesystem_of(base_dir)[0] not in ("overlay", "aufs")
