"""resolve_in_root: symlinks followed as inside a chroot, never out of it."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from rootfs_core.paths import has_no_symlink, is_within, resolve_in_root


@pytest.fixture
def tree(tmp_path: Path) -> str:
    root = str(tmp_path)
    for d in ("usr/sbin", "etc", "var"):
        os.makedirs(os.path.join(root, d))
    os.symlink("usr/sbin", os.path.join(root, "sbin"))
    os.symlink("/etc", os.path.join(root, "abs"))
    os.symlink("../../../../etc", os.path.join(root, "climb"))
    os.symlink("loop", os.path.join(root, "loop"))
    os.symlink("/../../var/../usr/./sbin", os.path.join(root, "messy"))
    open(os.path.join(root, "file"), "w").close()
    return root


def test_relative_symlink_resolves_inside(tree: str) -> None:
    assert resolve_in_root(tree, "sbin") == os.path.join(tree, "usr/sbin")


def test_absolute_symlink_is_contained(tree: str) -> None:
    assert resolve_in_root(tree, "abs") == os.path.join(tree, "etc")


def test_climbing_symlink_is_contained(tree: str) -> None:
    assert resolve_in_root(tree, "climb") == os.path.join(tree, "etc")


def test_dotdot_in_request_is_contained(tree: str) -> None:
    assert resolve_in_root(tree, "../../etc") == os.path.join(tree, "etc")
    assert resolve_in_root(tree, "messy") == os.path.join(tree, "usr/sbin")


def test_loop_and_missing_and_notdir(tree: str) -> None:
    with pytest.raises(OSError) as loop:
        resolve_in_root(tree, "loop")
    assert loop.value.errno == errno.ELOOP
    with pytest.raises(FileNotFoundError):
        resolve_in_root(tree, "nope/x")
    with pytest.raises(OSError) as notdir:
        resolve_in_root(tree, "file/x")
    assert notdir.value.errno == errno.ENOTDIR


def test_result_has_no_symlink(tree: str) -> None:
    for name in ("sbin", "abs", "climb", "messy"):
        assert has_no_symlink(resolve_in_root(tree, name))
    assert not has_no_symlink(os.path.join(tree, "sbin"))


def test_is_within() -> None:
    assert is_within("/a/b", "/a")
    assert is_within("/a", "/a/")
    assert not is_within("/ab", "/a")
    assert not is_within("/a/../b", "/a")
