"""A container may build a directory tree of any depth in its root: remove
still takes the root apart, on every real backend, and leaves nothing."""

from __future__ import annotations

import os

from rootfs_core import RootFS

DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
DEPTH = 1200  # deeper than Python's recursion limit


def build_deep_tree(where: str, depth: int = DEPTH) -> None:
    """What a process in the root might do: ``depth`` nested directories,
    with a file, a symlink out of the root and a fifo every hundred levels,
    made relative to fds (as a process walking down would)."""
    fd = os.open(where, DIR)
    try:
        for level in range(depth):
            if level % 100 == 0:
                file = os.open(f"f{level}", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
                os.write(file, b"data\n")
                os.close(file)
                os.symlink("/etc", f"link{level}", dir_fd=fd)
                os.mkfifo(f"fifo{level}", dir_fd=fd)
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", DIR, dir_fd=fd)
            os.close(fd)
            fd = child
    finally:
        os.close(fd)


def test_a_root_with_a_very_deep_tree_is_removed(base_dir: str, backend: str, prototype: str) -> None:
    """Deep trees in a directory of the prototype (etc: a copy-up, or a
    writable copy) and in one that starts empty (tmp); remove succeeds and
    the base directory is clean (the fixture checks it)."""
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(prototype)
    for where in ("etc", "tmp"):
        build_deep_tree(os.path.join(root, where))
    assert os.path.isdir(os.path.join(root, "tmp", *["d"] * 500))
    rfs.remove(root)
    assert not os.path.lexists(root)
    assert rfs.instances() == []
