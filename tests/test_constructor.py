"""The seed's constructor checks, with the seed's error ids."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootfs_core import ErrorId, ImplErrorId, RootFS, RootFSError
from rootfs_core.registry import Registry

SEED_ERROR_IDS = [
    "ErrCreateTempDir",
    "ErrCreateMountDir",
    "ErrBindMountRoot",
    "ErrBindMountSubdir",
    "ErrRootSubdirMissing",
    "ErrUnmountSubdir",
    "ErrOverlayTempDir",
    "ErrOverlayDir",
    "ErrRemoveMountDir",
    "ErrUnmountRoot",
]
SEED_IMPL_IDS = ["ErrNilSyscallFS", "ErrRwBaseDirMissing", "ErrRwBaseDirIsFile", "ErrRwBaseDirNotRw"]


def test_seed_ids_keep_their_names_and_order() -> None:
    assert [e.name for e in ErrorId][: len(SEED_ERROR_IDS)] == SEED_ERROR_IDS
    assert [e.name for e in ImplErrorId] == SEED_IMPL_IDS


def _expect(error_id: object, *args: object, **kwargs: object) -> RootFSError:
    with pytest.raises(RootFSError) as info:
        RootFS(*args, **kwargs)  # type: ignore[arg-type]
    assert info.value.error_id is error_id
    assert str(info.value).startswith(f"{info.value.error_id.name}: ")
    return info.value


def test_syscalls_that_are_not_syscalls(tmp_path: Path) -> None:
    _expect(ImplErrorId.ErrNilSyscallFS, str(tmp_path), syscalls=object())


def test_missing_base_dir(tmp_path: Path) -> None:
    _expect(ImplErrorId.ErrRwBaseDirMissing, str(tmp_path / "absent"))


def test_base_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    _expect(ImplErrorId.ErrRwBaseDirIsFile, str(tmp_path / "file"))


def test_base_dir_not_read_write(tmp_path: Path) -> None:
    target = tmp_path / "ro"
    target.mkdir()
    os.chmod(target, 0o500)
    try:
        _expect(ImplErrorId.ErrRwBaseDirNotRw, str(target))
    finally:
        os.chmod(target, 0o700)
    assert not (target / ".rootfs").exists()  # nothing was written into it


def test_valid_base_dir_gets_only_its_state_dir(tmp_path: Path) -> None:
    RootFS(tmp_path, registry=Registry({}, {}))
    assert sorted(os.listdir(tmp_path)) == [".rootfs"]
