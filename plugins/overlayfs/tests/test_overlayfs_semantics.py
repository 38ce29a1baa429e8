"""What a process sees in an overlay root: a writable copy of the prototype
whose changes never reach the prototype (the fixtures checksum it)."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from rootfs_core import RootFS
from rootfs_core.testing.checks import mounts_below
from rootfs_core.testing.conformance import assert_removed_for_good
from rootfs_core.testing.prototypes import ODD_NAME


def read(path: str | bytes) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def write(path: str | bytes, content: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(content)


def test_root_is_an_overlay_of_the_prototype(rfs: RootFS, prototype: str) -> None:
    root = rfs.generate(prototype)
    assert sorted(os.listdir(root)) == sorted(os.listdir(prototype))
    [instance] = rfs.instances()
    assert (instance.root, instance.backend, instance.state) == (root, "overlayfs", "ready")
    assert mounts_below(os.path.dirname(root)) == [root]
    assert os.stat(root).st_mode == os.stat(prototype).st_mode  # the upper dir copies the mode
    rfs.remove(root)


def test_writes_overwrites_and_deletes_stay_in_the_root(rfs: RootFS, prototype: str) -> None:
    root = rfs.generate(prototype)
    write(f"{root}/etc/new", b"new\n")
    write(f"{root}/etc/passwd", b"changed\n")
    with open(f"{root}/var/log.txt", "ab") as fh:
        fh.write(b"appended\n")
    os.unlink(f"{root}/home/readme")  # a whiteout
    os.unlink(f"{root}/etc/deep/er/file")  # a whole prototype tree deleted...
    os.rmdir(f"{root}/etc/deep/er")
    os.rmdir(f"{root}/etc/deep")
    os.mkdir(f"{root}/etc/deep")  # recreated over the whiteout: must be empty
    assert read(f"{root}/etc/new") == b"new\n"
    assert read(f"{root}/etc/passwd") == b"changed\n"
    assert read(f"{root}/var/log.txt") == b"log line\nappended\n"
    assert not os.path.lexists(f"{root}/home/readme")
    assert os.listdir(f"{root}/etc/deep") == []
    assert not os.path.lexists(f"{prototype}/etc/new")
    assert read(f"{prototype}/etc/passwd") == b"root:x:0:0:root:/root:/bin/sh\n"
    assert os.path.exists(f"{prototype}/home/readme")
    rfs.remove(root)


def test_renames_of_prototype_files_and_directories(rfs: RootFS, prototype: str) -> None:
    """redirect_dir=on: rename(2) of a lower directory works (default: EXDEV)."""
    root = rfs.generate(prototype)
    os.rename(f"{root}/etc/hostname", f"{root}/etc/hostname.old")
    os.rename(f"{root}/etc", f"{root}/etc2")
    os.rename(f"{root}/etc2/deep", f"{root}/var/deep")  # across directories, with a subtree
    assert read(f"{root}/etc2/hostname.old") == b"prototype\n"
    assert read(f"{root}/var/deep/er/file") == b"deep\n"
    assert not os.path.lexists(f"{root}/etc")
    os.mkdir(f"{root}/etc")  # the old name is free, and does not show the prototype's etc
    assert os.listdir(f"{root}/etc") == []
    os.rename(f"{root}/etc2", f"{root}/etc3")  # a renamed directory renamed again
    assert sorted(os.listdir(f"{root}/etc3")) == ["hostname.link", "hostname.old", "passwd"]
    assert sorted(os.listdir(f"{prototype}/etc")) == ["deep", "hostname", "hostname.link", "passwd"]
    rfs.remove(root)


def test_special_files_work_in_the_root(rfs: RootFS, prototype: str) -> None:
    root = rfs.generate(prototype)
    null = os.lstat(f"{root}/dev/null")
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    write(f"{root}/dev/null", b"discarded")
    assert read(f"{root}/dev/null") == b""
    with open(f"{root}/dev/zero", "rb") as fh:
        assert fh.read(8) == b"\0" * 8
    fd = os.open(f"{root}/dev/fifo", os.O_RDWR | os.O_NONBLOCK)  # a pipe, never copied up
    try:
        os.write(fd, b"through the fifo")
        assert os.read(fd, 100) == b"through the fifo"
    finally:
        os.close(fd)
    assert stat.S_ISSOCK(os.lstat(f"{root}/var/sock").st_mode)
    assert os.readlink(f"{root}/bin") == "usr/bin"
    assert read(f"{root}/bin/tool") == read(f"{prototype}/usr/bin/tool")
    os.symlink("../../etc/passwd", f"{root}/bin/passwd-link")  # bin -> usr/bin
    assert read(f"{root}/bin/passwd-link").startswith(b"root:")
    os.mknod(f"{root}/dev/full", 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    with pytest.raises(OSError) as exc:
        write(f"{root}/dev/full", b"x")
    assert exc.value.errno == errno.ENOSPC
    assert not os.path.lexists(f"{prototype}/dev/full")
    rfs.remove(root)


def test_hardlinks_stay_linked_when_written(rfs: RootFS, prototype: str) -> None:
    """index=on: writing one name of a prototype hardlink changes both names."""
    root = rfs.generate(prototype)
    assert os.stat(f"{root}/etc/hostname").st_ino == os.stat(f"{root}/etc/hostname.link").st_ino
    write(f"{root}/etc/hostname", b"instance\n")
    assert read(f"{root}/etc/hostname.link") == b"instance\n"
    assert os.stat(f"{root}/etc/hostname").st_ino == os.stat(f"{root}/etc/hostname.link").st_ino
    os.link(f"{root}/var/log.txt", f"{root}/var/log.link")  # a new link to a prototype file
    assert os.stat(f"{root}/var/log.txt").st_nlink == 2
    assert read(f"{prototype}/etc/hostname.link") == b"prototype\n"
    rfs.remove(root)


def test_non_utf8_names(rfs: RootFS, prototype: str) -> None:
    root = os.fsencode(rfs.generate(prototype))
    home = root + b"/home"
    assert ODD_NAME in os.listdir(home)
    assert read(home + b"/" + ODD_NAME) == b"odd\n"
    os.rename(home + b"/" + ODD_NAME, home + b"/\xfe-renamed")
    write(home + b"/\x80new", b"new\n")
    os.mkdir(home + b"/\xc3(dir")
    assert sorted(os.listdir(home)) == sorted([b"\xfe-renamed", b"\x80new", b"\xc3(dir", b"readme"])
    assert ODD_NAME in os.listdir(os.fsencode(prototype) + b"/home")
    rfs.remove(os.fsdecode(root))


def test_two_instances_do_not_see_each_other(rfs: RootFS, prototype: str) -> None:
    first, second = rfs.generate(prototype), rfs.generate(prototype)
    assert first != second
    write(f"{first}/etc/hostname", b"first\n")
    write(f"{first}/only-first", b"1")
    os.unlink(f"{second}/etc/passwd")
    os.rename(f"{second}/var", f"{second}/var2")
    assert read(f"{second}/etc/hostname") == b"prototype\n"
    assert not os.path.lexists(f"{second}/only-first")
    assert os.path.exists(f"{first}/etc/passwd") and os.path.isdir(f"{first}/var")
    rfs.remove(first)
    assert read(f"{second}/etc/hostname") == b"prototype\n"  # removing one leaves the other intact
    rfs.remove(second)


@pytest.mark.parametrize("size", [None, "8M"])
def test_removal_leaves_nothing(rfs: RootFS, prototype: str, size: str | None) -> None:
    root = rfs.generate(prototype, size=size)
    write(f"{root}/etc/new", b"new\n")
    os.unlink(f"{root}/etc/passwd")
    assert rfs.remove(root) is True  # everything is gone
    assert_removed_for_good(rfs, root)


def test_size_limit_gives_enospc(rfs: RootFS, prototype: str) -> None:
    root = rfs.generate(prototype, size="1M")
    [instance] = rfs.instances()
    assert instance.options == {"size": "1M"}
    vfs = os.statvfs(root)  # overlay reports the upper layer's filesystem
    assert vfs.f_blocks * vfs.f_frsize == 1 << 20
    with pytest.raises(OSError) as exc, open(f"{root}/big", "wb") as fh:
        for _ in range(32):
            fh.write(b"x" * 65536)
            fh.flush()
    assert exc.value.errno == errno.ENOSPC
    assert 900 * 1024 <= os.stat(f"{root}/big").st_size <= 1 << 20
    os.unlink(f"{root}/big")  # the space comes back
    write(f"{root}/etc/passwd", b"fits again\n")
    rfs.remove(root)


def test_one_device_and_distinct_inodes_across_layers(rfs: RootFS, prototype: str) -> None:
    """xino=auto: with the upper on a tmpfs and the prototype elsewhere, the
    root still looks like one filesystem (tar, du and find -xdev rely on it)."""
    root = rfs.generate(prototype, size="4M")
    write(f"{root}/new", b"upper\n")
    paths = [root, f"{root}/etc", f"{root}/etc/passwd", f"{root}/new", f"{root}/usr/bin/tool"]
    stats = [os.lstat(p) for p in paths]
    assert len({st.st_dev for st in stats}) == 1
    assert len({st.st_ino for st in stats}) == len(paths)
    rfs.remove(root)
