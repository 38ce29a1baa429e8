"""Tree deletion has no depth limit: a process in a root may build a tree
thousands of levels deep, with paths far longer than PATH_MAX, and remove
still deletes it, with a bounded number of open fds, never following a
symlink and never entering a mount, however deep it hides."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
from collections.abc import Callable, Iterator

import pytest

from rootfs_core.syscalls import MS_BIND, UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import mounts_below
from rootfs_core.testing.fixtures import remove_scratch, scratch_dir

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
AtLevel = Callable[[int], None]  # called with the fd of the directory at that level


def write(name: str, data: bytes, dir_fd: int) -> None:
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read(name: str, dir_fd: int) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def make_chain(top: str, depth: int, name: str = "d", at: dict[int, AtLevel] | None = None) -> None:
    """``depth`` nested directories ``name`` below the existing ``top``, made
    relative to fds (the paths may exceed PATH_MAX); ``at[level](fd)`` is
    called in the directory at that level (0 is ``top`` itself, ``depth`` the
    deepest)."""
    at = at or {}
    fd = os.open(top, DIR)
    try:
        for level in range(depth + 1):
            if level in at:
                at[level](fd)
            if level == depth:
                break
            os.mkdir(name, dir_fd=fd)
            child = os.open(name, DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


@contextlib.contextmanager
def at_level(top: str, depth: int, name: str = "d") -> Iterator[int]:
    """An fd of the directory ``depth`` levels of ``name`` below ``top``."""
    fd = os.open(top, DIR)
    try:
        for _ in range(depth):
            child = os.open(name, DIR, dir_fd=fd)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def fd_limit(soft: int) -> Iterator[None]:
    """RLIMIT_NOFILE lowered to ``soft`` for the duration: one fd per level
    would run out long before the bottom of these trees."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def open_fds() -> list[str]:
    return sorted(os.listdir("/proc/self/fd"))


def files_and_branch(level: int) -> AtLevel:
    """Files of every kind, and a side branch deep enough to be climbed out of
    through "..", at one level of a tree."""

    def make(fd: int) -> None:
        write(f"file{level}", b"x" * (level % 5000), fd)
        os.symlink("..", f"up{level}", dir_fd=fd)
        os.mkfifo(f"fifo{level}", dir_fd=fd)
        os.link(f"file{level}", f"hard{level}", src_dir_fd=fd, dst_dir_fd=fd)
        os.mkdir(f"branch{level}", dir_fd=fd)
        make_chain(
            f"/proc/self/fd/{fd}/branch{level}", 40, name="b", at={40: lambda f: write("leaf", b"", f)}
        )

    return make


@pytest.mark.parametrize("depth", [1200, 5000])
def test_a_very_deep_tree_is_deleted(leak_guard: None, depth: int) -> None:
    holder = scratch_dir("deep-")
    tree = os.path.join(holder, "tree")
    os.mkdir(tree)
    levels = [0, 1, 31, 32, 33, 64, 999, 1000, 1001, depth // 2, depth - 1, depth]
    make_chain(tree, depth, at={level: files_and_branch(level) for level in levels})
    fds = open_fds()
    with fd_limit(64):
        LinuxSyscalls().remove_tree(tree)
    assert not os.path.lexists(tree)
    assert open_fds() == fds  # none leaked
    assert os.listdir(holder) == []
    remove_scratch(holder)


def test_a_wide_and_deep_tree_is_deleted(leak_guard: None) -> None:
    """Many siblings at many levels: each directory is listed once, and the
    walk returns to the right parent after every branch."""
    holder = scratch_dir("wide-")
    tree = os.path.join(holder, "tree")
    os.mkdir(tree)

    def siblings(fd: int) -> None:
        for n in range(10):
            os.mkdir(f"s{n}", dir_fd=fd)
            write(f"s{n}/f", b"f", fd)

    make_chain(tree, 300, at={level: siblings for level in range(0, 301, 7)})
    with fd_limit(64):
        LinuxSyscalls().remove_tree(tree)
    assert os.listdir(holder) == []
    remove_scratch(holder)


def test_a_mount_deep_in_a_tree_is_refused_and_untouched(leak_guard: None) -> None:
    """A bind mount 600 levels down (far below the levels kept open) fails the
    delete with EBUSY: nothing in the mount, nothing of the mount point and
    nothing hidden under it is deleted, and the mount stays."""
    holder = scratch_dir("deepmount-")
    tree = os.path.join(holder, "tree")
    volume = os.path.join(holder, "volume")
    os.mkdir(tree)
    os.mkdir(volume)
    write("precious", b"keep me\n", _dirfd(volume))

    def hidden(fd: int) -> None:
        os.mkdir("point", dir_fd=fd)
        write("point/under-the-mount", b"hidden\n", fd)

    make_chain(tree, 700, at={600: hidden, 650: files_and_branch(650)})
    point = os.path.join(tree, *["d"] * 600, "point")
    assert len(point) < 4000  # still a path mount(2) accepts
    sys_ = LinuxSyscalls()
    sys_.mount(volume, point, "", MS_BIND, "")
    try:
        with pytest.raises(OSError) as info, fd_limit(64):
            sys_.remove_tree(tree)
        assert info.value.errno == errno.EBUSY
        assert "point" in str(info.value.filename)
        assert sys_.is_mountpoint(point)
        assert os.listdir(point) == ["precious"]
        with open(os.path.join(point, "precious"), "rb") as fh:
            assert fh.read() == b"keep me\n"
        with pytest.raises(OSError) as info:
            sys_.remove_tree(point)  # the mount point itself
        assert info.value.errno == errno.EBUSY
        assert sys_.is_mountpoint(point)
    finally:
        sys_.umount(point, UMOUNT_NOFOLLOW)
    with at_level(tree, 600) as fd:
        assert read("point/under-the-mount", fd) == b"hidden\n"
    with open(os.path.join(volume, "precious"), "rb") as fh:
        assert fh.read() == b"keep me\n"
    sys_.remove_tree(tree)  # nothing mounted any more
    assert os.listdir(holder) == ["volume"]
    remove_scratch(holder)


def _dirfd(path: str) -> int:
    """An fd of ``path`` closed at the end of the test process (a helper for
    one-off writes; the count is tiny)."""
    fd = os.open(path, DIR)
    _opened.append(fd)
    return fd


_opened: list[int] = []


@pytest.fixture(autouse=True)
def _close_opened() -> Iterator[None]:
    yield
    while _opened:
        os.close(_opened.pop())


def test_symlinks_deep_in_a_tree_are_deleted_as_links(leak_guard: None) -> None:
    """Links to directories and files outside, at every depth (also below the
    levels kept open): the links go, their targets stay whole."""
    holder = scratch_dir("deeplinks-")
    tree = os.path.join(holder, "tree")
    outside = os.path.join(holder, "outside")
    os.mkdir(tree)
    os.makedirs(os.path.join(outside, "sub"))
    with open(os.path.join(outside, "sub", "file"), "wb") as fh:
        fh.write(b"outside\n")
    with open(os.path.join(outside, "top"), "wb") as fh:
        fh.write(b"top\n")

    def links(fd: int) -> None:
        os.symlink(outside, "to-dir", dir_fd=fd)
        os.symlink(os.path.join(outside, "sub"), "to-sub", dir_fd=fd)
        os.symlink(os.path.join(outside, "top"), "to-file", dir_fd=fd)
        os.symlink("/", "to-slash", dir_fd=fd)
        os.symlink("nowhere", "dangling", dir_fd=fd)

    make_chain(tree, 1200, at={level: links for level in (0, 1, 33, 500, 1199, 1200)})
    LinuxSyscalls().remove_tree(tree)
    assert not os.path.lexists(tree)
    assert sorted(os.listdir(outside)) == ["sub", "top"]
    assert os.listdir(os.path.join(outside, "sub")) == ["file"]
    with open(os.path.join(outside, "sub", "file"), "rb") as fh:
        assert fh.read() == b"outside\n"
    remove_scratch(holder)


def test_a_tree_with_paths_longer_than_path_max(leak_guard: None) -> None:
    """Names of 250 bytes, 100 levels: paths of 25,000 bytes, six times
    PATH_MAX. A mount that deep (made relative to the working directory) is
    still refused."""
    holder = scratch_dir("long-")
    tree = os.path.join(holder, "tree")
    os.mkdir(tree)
    name = "n" * 250

    def files(fd: int) -> None:
        write("f" * 250, b"long\n", fd)
        os.mkdir("m", dir_fd=fd)

    make_chain(tree, 100, name=name, at={0: files, 17: files, 60: files, 100: files})
    with pytest.raises(OSError) as info:
        os.stat(os.path.join(tree, *[name] * 100))
    assert info.value.errno == errno.ENAMETOOLONG  # out of reach of any path
    sys_ = LinuxSyscalls()
    volume = os.path.join(holder, "volume")
    os.mkdir(volume)
    cwd = os.open(".", DIR)
    try:
        with at_level(tree, 60, name) as fd:
            os.fchdir(fd)
        sys_.mount(volume, "m", "", MS_BIND, "")
        try:
            with pytest.raises(OSError) as info:
                sys_.remove_tree(tree)
            assert info.value.errno == errno.EBUSY
            assert sys_.is_mountpoint("m")
        finally:
            sys_.umount("m", UMOUNT_NOFOLLOW)
    finally:
        os.fchdir(cwd)
        os.close(cwd)
    assert mounts_below(holder) == []
    with fd_limit(64):
        sys_.remove_tree(tree)
    assert os.listdir(holder) == ["volume"]
    remove_scratch(holder)


def test_a_tree_moved_while_deleted_is_detected(leak_guard: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """The way back up, through "..", leads to the directory that was left:
    a tree moved meanwhile fails the delete instead of deleting elsewhere."""
    from rootfs_core import syscalls

    holder = scratch_dir("moved-")
    tree = os.path.join(holder, "tree")
    elsewhere = os.path.join(holder, "elsewhere")
    os.mkdir(tree)
    os.mkdir(elsewhere)
    write("keep", b"keep\n", _dirfd(elsewhere))
    make_chain(tree, 100)
    real_unlink_files = syscalls._unlink_files
    calls = 0

    def moving(fd: int) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 90:  # listing level 89, with levels 1 to 57 closed: move level 50 away
            parent = os.path.join(tree, *["d"] * 49)
            os.rename(os.path.join(parent, "d"), os.path.join(elsewhere, "d"))
        return real_unlink_files(fd)

    monkeypatch.setattr(syscalls, "_unlink_files", moving)
    with pytest.raises(OSError):
        LinuxSyscalls().remove_tree(tree)
    monkeypatch.undo()
    assert read("keep", _dirfd(elsewhere)) == b"keep\n"
    assert sorted(os.listdir(elsewhere)) == ["d", "keep"]  # emptied, but not removed from the wrong parent
    LinuxSyscalls().remove_tree(tree)
    LinuxSyscalls().remove_tree(elsewhere)
    remove_scratch(holder)
