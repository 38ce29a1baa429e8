"""What a quilt root is: writable where the list says, read-only elsewhere,
and gone without a trace on remove."""

from __future__ import annotations

import errno
import os

import pytest
from quilt_support import MakePrototype, copies, instance_dir, records, tiny_with
from rootfs_quilt import backend

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.hookspecs import BAND_COPY
from rootfs_core.testing.checks import instance_mounts, mounts_below, tree_checksum
from rootfs_core.testing.conformance import assert_removed_for_good
from rootfs_core.testing.fixtures import assert_base_dir_clean

SEED_DIRS = ("proc", "dev", "etc", "home", "sbin", "var", "tmp")


def test_backend_is_discovered_and_probed(quilt: RootFS) -> None:
    status = {s.name: s for s in quilt.backends()}["quilt"]
    assert status.supported, status.reason
    assert status.priority == 150 and status.priority in BAND_COPY
    assert status.target == "rootfs_quilt.backend"


def test_writes_land_in_the_root_not_the_prototype(quilt: RootFS, prototype: str) -> None:
    before = tree_checksum(prototype)
    root = quilt.generate(prototype)
    try:
        assert sorted(mounts_below(root)) == sorted([root, *(os.path.join(root, d) for d in SEED_DIRS)])
        for name in SEED_DIRS:
            path = os.path.join(root, name, "written")
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(name)
            assert not os.path.lexists(os.path.join(prototype, name, "written"))
        # The copies are real and changeable: a file of the prototype too.
        with open(os.path.join(root, "etc/hostname"), "w", encoding="utf-8") as fh:
            fh.write("container\n")
        with open(os.path.join(prototype, "etc/hostname"), encoding="utf-8") as fh:
            assert fh.read() == "prototype\n"
        assert tree_checksum(prototype) == before
    finally:
        quilt.remove(root)
    assert_base_dir_clean(quilt.base_dir)


def test_tmp_starts_empty_and_sticky(quilt: RootFS, make_prototype: MakePrototype) -> None:
    prototype = make_prototype(tiny_with(files=("tmp/stale",)))
    with quilt.generated(prototype) as root:
        assert os.listdir(os.path.join(root, "tmp")) == []
        assert os.stat(os.path.join(root, "tmp")).st_mode & 0o7777 == 0o1777
        assert os.path.exists(os.path.join(root, "var", "log.txt"))  # the others are copies


@pytest.mark.parametrize("where", ["usr", "usr/bin", "root", ""])
def test_everything_else_is_read_only(quilt: RootFS, prototype: str, where: str) -> None:
    with quilt.generated(prototype) as root:
        with pytest.raises(OSError) as info:
            open(os.path.join(root, where, "new"), "w").close()
        assert info.value.errno == errno.EROFS
        with pytest.raises(OSError) as info:
            os.chmod(os.path.join(root, "usr/bin/tool"), 0o777)
        assert info.value.errno == errno.EROFS


def test_rename_and_link_between_writable_dirs_are_exdev(quilt: RootFS, prototype: str) -> None:
    with quilt.generated(prototype) as root:
        src = os.path.join(root, "tmp", "file")
        open(src, "w").close()
        for move in (os.rename, os.link):
            with pytest.raises(OSError) as info:
                move(src, os.path.join(root, "var", "file"))
            assert info.value.errno == errno.EXDEV
        os.rename(src, os.path.join(root, "tmp", "renamed"))  # within one directory it works


def test_remove_unmounts_all_and_deletes_the_copies(quilt: RootFS, prototype: str) -> None:
    root = quilt.generate(prototype)
    assert copies(root) == ["0-dev", "1-etc", "2-home", "3-proc", "4-sbin", "5-tmp", "6-var"]
    open(os.path.join(root, "var", "data"), "w").close()
    assert quilt.remove(root) is True  # everything is gone
    assert instance_mounts(quilt.base_dir) == []
    assert not os.path.lexists(instance_dir(root))
    assert records(quilt.base_dir) == []
    assert_removed_for_good(quilt, root)


def test_dirs_option_limits_the_writable_dirs(quilt: RootFS, prototype: str) -> None:
    with quilt.generated(prototype, dirs=" etc , tmp ") as root:
        assert sorted(mounts_below(root)) == sorted([root, f"{root}/etc", f"{root}/tmp"])
        open(os.path.join(root, "etc", "ok"), "w").close()
        with pytest.raises(OSError) as info:
            open(os.path.join(root, "var", "no"), "w").close()
        assert info.value.errno == errno.EROFS


def test_missing_dir_fails_and_leaves_nothing(quilt: RootFS, prototype: str) -> None:
    with pytest.raises(RootFSError) as info:
        quilt.generate(prototype, dirs="etc,opt,tmp")
    assert info.value.error_id is ErrorId.ErrRootSubdirMissing
    assert "opt" in str(info.value)
    assert_base_dir_clean(quilt.base_dir)


def test_a_file_where_a_dir_is_expected_fails(quilt: RootFS, prototype: str) -> None:
    with pytest.raises(RootFSError) as info:
        quilt.generate(prototype, dirs="etc/passwd")
    assert info.value.error_id is ErrorId.ErrRootSubdirMissing
    assert_base_dir_clean(quilt.base_dir)


def test_optional_missing_dir_is_skipped(quilt: RootFS, prototype: str) -> None:
    with quilt.generated(prototype, dirs="etc,opt?,tmp") as root:
        assert sorted(mounts_below(root)) == sorted([root, f"{root}/etc", f"{root}/tmp"])


@pytest.mark.parametrize("dirs", ["/etc", "../etc", "etc/../../x", "etc,,tmp", "", "?", "etc,/"])
def test_bad_dirs_are_refused_before_anything_is_made(quilt: RootFS, prototype: str, dirs: str) -> None:
    with pytest.raises(RootFSError) as info:
        quilt.generate(prototype, dirs=dirs)
    assert info.value.error_id is ErrorId.ErrBadOption
    assert_base_dir_clean(quilt.base_dir)


def test_parse_dirs_normalises_and_marks_optional() -> None:
    assert backend.parse_dirs("./etc/, usr//local ?,tmp") == [
        backend.Patch("etc", False),
        backend.Patch("usr/local", True),
        backend.Patch("tmp", False),
    ]


def test_dirs_reaching_one_target_mount_once(quilt: RootFS, make_prototype: MakePrototype) -> None:
    # The tiny prototype has bin -> usr/bin; add a chain to it, xbin -> bin.
    prototype = make_prototype(tiny_with(("xbin", "bin")))
    with quilt.generated(prototype, dirs="xbin,bin,usr/bin") as root:
        assert mounts_below(root) == [root, f"{root}/usr/bin"]
        assert copies(root) == ["0-usr_bin"]
        assert os.listdir(os.path.join(root, "usr/bin")) == ["tool"]


@pytest.mark.parametrize("dirs", ["etc,etc/deep", "etc/deep,etc"])
def test_nested_dirs_mount_parents_first(quilt: RootFS, prototype: str, dirs: str) -> None:
    with quilt.generated(prototype, dirs=dirs) as root:
        assert mounts_below(root) == [root, f"{root}/etc", f"{root}/etc/deep"]
        open(os.path.join(root, "etc/deep/new"), "w").close()
        rw = os.path.join(instance_dir(root), "rw")
        assert os.path.exists(os.path.join(rw, "1-etc_deep", "new"))
        assert not os.path.exists(os.path.join(rw, "0-etc", "deep", "new"))
