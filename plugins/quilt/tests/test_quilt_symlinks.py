"""Symlinks in the prototype: followed inside the root like the container
would, never out of it onto the host."""

from __future__ import annotations

import os
import uuid

import pytest
from quilt_support import MakePrototype, build_debian_like, copies, tiny_with

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.testing.checks import (
    instance_mounts,
    mount_options,
    mount_points,
    mounts_below,
    tree_checksum,
)
from rootfs_core.testing.fixtures import assert_base_dir_clean


def _host_mounts(quilt: RootFS, path: str) -> list[tuple[str, set[str]]]:
    """The mounts at and below ``path`` with their options, but the base
    directory's own (``rootfs_core.basedir``, made by the first generate):
    a bind that escaped the root, or a remount of the host's, shows here."""
    return [(point, mount_options(point)) for point in mounts_below(path) if point != quilt.base_dir]


def test_debian_like_prototype(quilt: RootFS, make_prototype: MakePrototype) -> None:
    prototype = make_prototype(build_debian_like)
    with quilt.generated(prototype) as root:
        # sbin -> usr/sbin: the writable copy lands on the resolved directory.
        assert f"{root}/usr/sbin" in mounts_below(root)
        assert f"{root}/sbin" not in mounts_below(root)
        assert os.readlink(os.path.join(root, "sbin")) == "usr/sbin"
        open(os.path.join(root, "usr/sbin/new-tool"), "w").close()
        assert not os.path.exists(os.path.join(prototype, "usr/sbin/new-tool"))
        # dev: device nodes recreated, the absolute symlink kept as it is.
        for name in ("null", "zero", "full", "random", "tty"):
            assert (
                os.lstat(os.path.join(root, "dev", name)).st_rdev
                == os.lstat(os.path.join(prototype, "dev", name)).st_rdev
            )
        assert os.readlink(os.path.join(root, "dev/fd")) == "/proc/self/fd"
        assert tree_checksum(os.path.join(root, "dev")) == tree_checksum(os.path.join(prototype, "dev"))
        # lib -> usr/lib stays read-only (not in the list).
        with pytest.raises(OSError):
            open(os.path.join(root, "usr/lib/new"), "w").close()


@pytest.mark.parametrize(
    ("link", "target", "lands_on"),
    [
        ("var", "/etc", "etc"),  # absolute: the root's etc, not the host's
        ("var", "../../../../../../etc", "etc"),  # climbing: stops at the root
        ("home", "/usr/../../../tmp/../usr/lib", "usr/lib"),
        ("home", "//var/../etc/deep", "etc/deep"),
    ],
)
def test_escaping_symlinks_are_contained(
    quilt: RootFS, make_prototype: MakePrototype, link: str, target: str, lands_on: str
) -> None:
    prototype = make_prototype(tiny_with((link, target)))
    host_path = os.path.normpath(os.path.join("/", lands_on))
    host_mounts = _host_mounts(quilt, host_path)
    before = set(mount_points())
    marker = f"quilt-test-{uuid.uuid4().hex}"
    with quilt.generated(prototype, dirs=f"{link},etc") as root:
        # Every new mount is in the root, but for the base directory's own
        # private mount (rootfs_core.basedir), made before the first instance.
        new = set(mount_points()) - before - {quilt.base_dir}
        assert new and all(p == root or p.startswith(root + "/") for p in new), new
        assert f"{root}/{lands_on}" in new
        assert _host_mounts(quilt, host_path) == host_mounts
        # Written through the resolved path (the host must not follow the
        # root's absolute symlinks): it lands in the copy only.
        open(os.path.join(root, lands_on, marker), "w").close()
        assert not os.path.lexists(os.path.join(host_path, marker))
        assert not os.path.lexists(os.path.join(prototype, lands_on, marker))
    assert instance_mounts(quilt.base_dir) == []


@pytest.mark.parametrize(
    ("link", "target"),
    [
        ("etc", "../../../../etc"),  # resolves to itself inside the root: a loop
        ("etc", "/etc"),
        ("dev", "dev"),
        ("var", "/usr/bin/tool"),  # a file, not a directory
        ("home", "/nonexistent"),
    ],
)
def test_unusable_symlinks_are_refused(
    quilt: RootFS, make_prototype: MakePrototype, link: str, target: str
) -> None:
    prototype = make_prototype(tiny_with((link, target)))
    host_mounts = _host_mounts(quilt, os.path.normpath(os.path.join("/", target)))
    with pytest.raises(RootFSError) as info:
        quilt.generate(prototype, dirs=f"tmp,{link}")
    assert info.value.error_id is ErrorId.ErrRootSubdirMissing
    assert_base_dir_clean(quilt.base_dir)
    assert _host_mounts(quilt, os.path.normpath(os.path.join("/", target))) == host_mounts
    # Marked optional, the unusable directory is simply left read-only.
    with quilt.generated(prototype, dirs=f"tmp,{link}?") as root:
        assert mounts_below(root) == [root, f"{root}/tmp"]


@pytest.mark.parametrize("target", ["/", "..", "/usr/.."])
def test_symlink_to_the_root_itself_is_refused(
    quilt: RootFS, make_prototype: MakePrototype, target: str
) -> None:
    prototype = make_prototype(tiny_with(("home", target)))
    host_mounts = _host_mounts(quilt, "/")
    with pytest.raises(RootFSError) as info:
        quilt.generate(prototype)
    assert info.value.error_id is ErrorId.ErrPathEscapesRoot
    assert_base_dir_clean(quilt.base_dir)
    assert _host_mounts(quilt, "/") == host_mounts


def test_hostile_link_to_a_listed_dir_mounts_it_once(quilt: RootFS, make_prototype: MakePrototype) -> None:
    prototype = make_prototype(tiny_with(("var", "/etc")))
    with quilt.generated(prototype) as root:
        assert mounts_below(root).count(f"{root}/etc") == 1
        assert copies(root) == ["0-dev", "1-etc", "2-home", "3-proc", "4-sbin", "5-tmp"]
