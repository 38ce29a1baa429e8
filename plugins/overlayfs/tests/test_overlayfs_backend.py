"""The backend as the core sees it: its description, its probe and why it
fails, its option, and the paths it refuses or must escape."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from rootfs_overlayfs import backend

from rootfs_core import ErrorId, RootFS, RootFSError, basedir
from rootfs_core.hookspecs import BAND_KERNEL_UNION
from rootfs_core.mounttable import filesystem_of
from rootfs_core.registry import Registry
from rootfs_core.syscalls import MS_PRIVATE, UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.faults import FaultySyscalls
from rootfs_core.testing.fixtures import (
    assert_base_dir_clean,
    release_base_dirs,
    remove_scratch,
    scratch_dir,
)
from rootfs_core.testing.prototypes import make_tiny_prototype


def test_priority_sits_in_the_kernel_union_band() -> None:
    info = backend.rootfs_backend_info()
    assert info.priority == 350 and info.priority in BAND_KERNEL_UNION
    assert set(info.options) == {"size"}


# The selection order the README's table of backends documents, best first.
DOCUMENTED_ORDER = ("overlayfs", "aufs", "fuse-overlayfs", "quilt")


def test_selected_before_aufs_and_quilt_where_they_are_installed() -> None:
    """As the installed registry reports them: overlayfs's priority is above
    aufs's and quilt's, and the in-tree backends installed with it are
    ordered as documented. Where aufs or quilt is not installed (tox's
    overlayfs environment installs overlayfs alone) it skips, saying so."""
    registry = Registry.discover()
    missing = [name for name in ("aufs", "quilt") if name not in registry.backends]
    if missing:
        pytest.skip(f"not installed here, so nothing to compare with: {', '.join(missing)}")

    def priority(name: str) -> int:
        info = registry.get(name).info  # ErrUnknownBackend for a broken one
        assert info is not None
        return info.priority

    assert priority("overlayfs") > priority("aufs") > priority("quilt")
    installed = [name for name in DOCUMENTED_ORDER if name in registry.backends]
    assert [b.name for b in registry.by_priority() if b.name in DOCUMENTED_ORDER] == installed


def test_supported_and_selected_here(
    base_dir: str, prototype: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`rootfs backends` shows it supported and selected; generate with no
    backend named uses it."""
    monkeypatch.delenv("ROOTFS_BACKEND", raising=False)
    monkeypatch.setenv("ROOTFS_CONFIG", os.path.join(tmp_path, "none.toml"))
    rfs = RootFS(base_dir)
    status = {s.name: s for s in rfs.backends()}["overlayfs"]
    assert (status.supported, status.reason, status.priority, status.selected) == (True, None, 350, True)
    root = rfs.generate(prototype)
    assert [i.backend for i in rfs.instances()] == ["overlayfs"]
    rfs.remove(root)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4096", 4096),
        ("64M", 64 << 20),
        ("64m", 64 << 20),
        ("1G", 1 << 30),
        ("512k", 512 << 10),
        ("2T", 2 << 40),
    ],
)
def test_size_values(text: str, size: int) -> None:
    assert backend.parse_size(text) == size


@pytest.mark.parametrize("text", ["", "0", "0M", "-1", "1.5G", "64MB", "50%", "ten", "1 G G", "99999999T"])
def test_bad_size_is_refused_and_leaves_nothing(
    rfs: RootFS, base_dir: str, prototype: str, text: str
) -> None:
    with pytest.raises(RootFSError) as exc:
        rfs.generate(prototype, size=text)
    assert exc.value.error_id is ErrorId.ErrBadOption
    assert_base_dir_clean(base_dir)


def test_unknown_option_is_refused(rfs: RootFS, prototype: str) -> None:
    with pytest.raises(RootFSError) as exc:
        rfs.generate(prototype, redirect_dir="off")
    assert exc.value.error_id is ErrorId.ErrBadOption


def test_prototype_overlapping_the_base_dir_is_refused(leak_guard: None) -> None:
    holder = scratch_dir("overlap-")
    try:
        proto = make_tiny_prototype(os.path.join(holder, "prototype"))
        inner_base = os.path.join(proto, "home", "base")  # the base dir inside the prototype
        os.mkdir(inner_base)
        outer = os.path.join(holder, "base")  # a prototype inside the base dir
        make_tiny_prototype(os.path.join(outer, "proto"))
        for base, candidate in [(inner_base, proto), (outer, os.path.join(outer, "proto")), (outer, outer)]:
            rfs = RootFS(base, backend="overlayfs")
            with pytest.raises(RootFSError) as exc:
                rfs.generate(candidate)
            assert exc.value.error_id is ErrorId.ErrPrototypeOverlapsBase
            assert rfs.instances() == []
            # A refused generate writes nothing: no state directory either.
            assert sorted(os.listdir(base)) == ([] if base == inner_base else ["proto"])
    finally:
        remove_scratch(holder)


def test_an_instance_root_cannot_be_a_prototype(rfs: RootFS, prototype: str) -> None:
    root = rfs.generate(prototype)
    with pytest.raises(RootFSError) as exc:
        rfs.generate(root)
    assert exc.value.error_id is ErrorId.ErrPrototypeOverlapsBase
    rfs.remove(root)


def test_paths_with_commas_colons_and_backslashes(base_dir: str, leak_guard: None) -> None:
    """Overlay's option syntax uses ',' and ':'; they are escaped, not misread."""
    holder = scratch_dir("odd-")
    try:
        proto = make_tiny_prototype(os.path.join(holder, "a,b:c\\d e=f"))
        rfs = RootFS(base_dir, backend="overlayfs")
        root = rfs.generate(proto)
        assert sorted(os.listdir(root)) == sorted(os.listdir(proto))
        rfs.remove(root)
    finally:
        remove_scratch(holder)


def test_non_utf8_prototype_path(base_dir: str, leak_guard: None) -> None:
    """Paths are bytes to the kernel: a prototype whose name is not UTF-8 works."""
    holder = scratch_dir("nonutf8-")
    try:
        proto = make_tiny_prototype(os.fsdecode(os.fsencode(holder) + b"/proto\xff"))
        rfs = RootFS(base_dir, backend="overlayfs")
        root = rfs.generate(proto)
        with open(os.path.join(root, "etc/hostname")) as fh:
            assert fh.read() == "prototype\n"
        rfs.remove(root)
    finally:
        remove_scratch(holder)


class WithoutNewMountApi(FaultySyscalls):
    """A caller's own syscalls object from before the new mount API."""

    mount_fs = None  # type: ignore[assignment]


def test_options_longer_than_a_page_go_through_the_new_mount_api(base_dir: str, leak_guard: None) -> None:
    """mount(2) would silently cut them, and could then mount the wrong
    directory: options past one page go through fsconfig, one per option;
    with a syscalls object that lacks it they are refused before mounting."""
    holder = scratch_dir("long-")
    try:
        deep = holder
        while len(deep) < 4000:
            deep = os.path.join(deep, "d" * min(200, 4000 - len(deep)))
        os.makedirs(deep)  # a valid prototype path, yet too long for mount(2)'s options
        with open(os.path.join(deep, "hostname"), "w") as fh:
            fh.write("deep\n")
        faulty = FaultySyscalls()
        rfs = RootFS(base_dir, backend="overlayfs", syscalls=faulty)
        assert rfs.probe("overlayfs").supported  # its own paths are short
        faulty.calls.clear()
        root = rfs.generate(deep)
        with open(os.path.join(root, "hostname")) as fh:
            assert fh.read() == "deep\n"
        assert next(c.name for c in faulty.calls if c.name.startswith("mount")) == "mount_fs"
        rfs.remove(root)
        old = WithoutNewMountApi()
        rfs = RootFS(base_dir, backend="overlayfs", syscalls=old)
        assert rfs.probe("overlayfs").supported
        old.calls.clear()
        with pytest.raises(RootFSError) as exc:
            rfs.generate(deep)
        assert exc.value.error_id is ErrorId.ErrBindMountRoot
        assert "one-page limit" in str(exc.value)
        assert [c.name for c in old.calls if c.name.startswith("mount")] == []
        assert_base_dir_clean(base_dir)
    finally:
        remove_scratch(holder)


@pytest.fixture
def overlay_base(leak_guard: None) -> Iterator[str]:
    """A base directory that itself lives on an overlay mount."""
    holder = scratch_dir("onoverlay-")
    for name in ("lower", "upper", "work", "merged"):
        os.mkdir(os.path.join(holder, name))
    merged = os.path.join(holder, "merged")
    data = f"lowerdir={holder}/lower,upperdir={holder}/upper,workdir={holder}/work"
    LinuxSyscalls().mount("overlay", merged, "overlay", 0, data)
    try:
        os.mkdir(os.path.join(merged, "base"))
        yield os.path.join(merged, "base")
    finally:
        # The base directory's own private mount (rootfs_core.basedir) lies
        # on the overlay: it goes first, or the overlay is busy.
        release_base_dirs(merged)
        LinuxSyscalls().umount(merged, UMOUNT_NOFOLLOW)
        remove_scratch(holder)


def test_base_dir_on_overlay_is_unsupported_and_says_why(overlay_base: str, prototype: str) -> None:
    rfs = RootFS(overlay_base, backend="overlayfs")
    probe = rfs.probe("overlayfs")
    assert not probe.supported
    assert probe.reason is not None
    assert "EINVAL" in probe.reason and "(overlay mounted at" in probe.reason
    with pytest.raises(RootFSError) as exc:
        rfs.generate(prototype)
    assert exc.value.error_id is ErrorId.ErrBackendUnsupported
    assert_base_dir_clean(overlay_base)


def _overlay_mount_call(base: str) -> int:
    """The 1-based number of the probe's overlay mount(2) among its calls.
    The base directory's one-time set-up (rootfs_core.basedir) is done
    first, so that a later RootFS makes the same calls in the same order."""
    basedir.make_private(base, LinuxSyscalls())
    faulty = FaultySyscalls()
    assert RootFS(base, backend="overlayfs", syscalls=faulty).probe("overlayfs").supported
    [number] = [n for n, c in enumerate(faulty.calls, 1) if c.name == "mount" and c.args[2] == "overlay"]
    return number


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (errno.ENODEV, ["ENODEV", "no overlay filesystem", "modprobe overlay"]),
        (errno.EPERM, ["EPERM", "CAP_SYS_ADMIN"]),
        (errno.EINVAL, ["EINVAL", "{fs}", "cannot hold an upper layer"]),
        (errno.EIO, ["EIO", "{fs}"]),
    ],
)
def test_probe_explains_a_failed_mount(base_dir: str, error: int, words: list[str]) -> None:
    number = _overlay_mount_call(base_dir)
    faulty = FaultySyscalls(fail_on={number}, error=error)
    probe = RootFS(base_dir, backend="overlayfs", syscalls=faulty).probe("overlayfs")
    assert faulty.calls[number - 1].args[2] == "overlay"  # the overlay mount failed, no other call
    assert not probe.supported and probe.reason is not None
    fstype, mount_point = filesystem_of(base_dir)
    fs = f"{fstype} mounted at {mount_point}"
    for word in words:
        assert word.format(fs=fs) in probe.reason
    assert_base_dir_clean(base_dir)


def test_probe_fails_cleanly_at_every_step(base_dir: str) -> None:
    """A fault while building says "unsupported" and leaves nothing; a fault
    while undoing says so too and leaves what the next RootFS sweeps."""
    # The base directory's one-time set-up (bind on itself: rootfs_core.basedir)
    # is done first, so that every RootFS below makes the same calls.
    basedir.make_private(base_dir, LinuxSyscalls())
    clean = FaultySyscalls()
    assert RootFS(base_dir, backend="overlayfs", syscalls=clean).probe("overlayfs").supported
    # The base directory made private (as every RootFS does once), then the
    # probe's one overlay, made private at once.
    mounts = [c.args for c in clean.calls if c.name == "mount"]
    assert [(target, fstype, flags == MS_PRIVATE) for _, target, fstype, flags, _ in mounts] == [
        (base_dir, "", True),
        (mounts[1][1], "overlay", False),
        (mounts[1][1], "", True),
    ]
    for number, call in enumerate(clean.calls, 1):
        faulty = FaultySyscalls(fail_on={number})
        probe = RootFS(base_dir, backend="overlayfs", syscalls=faulty).probe("overlayfs")
        assert not probe.supported, f"call {number} ({call.name}) failed, yet the probe passed"
        if call.name in ("umount", "rmdir", "remove_tree"):
            RootFS(base_dir, backend="overlayfs")  # sweeps the interrupted probe
        assert_base_dir_clean(base_dir)
