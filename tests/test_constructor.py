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
    assert [e.name for e in ImplErrorId][: len(SEED_IMPL_IDS)] == SEED_IMPL_IDS


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


def test_opening_a_base_dir_writes_nothing(tmp_path: Path) -> None:
    """State is created when something is to be stored, not on opening (a
    command that only reads, or is refused, leaves no trace)."""
    rfs = RootFS(tmp_path, registry=Registry({}, {}))
    assert rfs.instances() == [] and rfs.gc().instances == []
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("mode", "owner"), [(0o777, None), (0o1777, None), (0o770, None), (0o755, 65534), (0o700, 65534)]
)
def test_a_base_dir_others_can_write_is_refused(tmp_path: Path, mode: int, owner: int | None) -> None:
    """Another user could plant records there that make rootfs unmount and
    delete for them: refused, and nothing is written into it."""
    target = tmp_path / "shared"
    target.mkdir()
    os.chmod(target, mode)
    if owner is not None:
        os.chown(target, owner, owner)
    err = _expect(ImplErrorId.ErrRwBaseDirUnsafe, str(target), registry=Registry({}, {}))
    assert "writable by group or others" in str(err) or f"owned by uid {owner}" in str(err)
    assert os.listdir(target) == []


def test_a_state_dir_others_can_write_is_refused(tmp_path: Path) -> None:
    os.mkdir(tmp_path / ".rootfs", 0o700)
    os.mkdir(tmp_path / ".rootfs" / "records")
    os.chmod(tmp_path / ".rootfs" / "records", 0o777)
    with pytest.raises(RootFSError) as info:
        RootFS(tmp_path, registry=Registry({}, {}))
    assert info.value.error_id is ErrorId.ErrRecord and "writable by group or others" in str(info.value)
