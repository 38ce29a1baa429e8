"""The writable copies are faithful (the core's copy primitive, GNU ``cp -a``):
what the container sees in a writable directory is exactly the prototype's."""

from __future__ import annotations

import os
import socket
import stat
import struct

from quilt_support import MakePrototype, build_debian_like

from rootfs_core import RootFS
from rootfs_core.testing.checks import tree_checksum

MTIME_NS = 1_000_000_123_456_789
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_UNDEFINED = 0xFFFFFFFF


def _posix_acl(*entries: tuple[int, int, int]) -> bytes:
    """The kernel's ``system.posix_acl_access`` format (no setfacl needed)."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, qid) for tag, perm, qid in entries)


def _rich_etc(path: str) -> None:
    """A Debian-like prototype whose ``etc`` has every kind of file and
    metadata a copy could lose."""
    build_debian_like(path)
    etc = os.path.join(path, "etc")
    os.makedirs(os.path.join(etc, "sub/dir"))
    for name, mode, owner in (
        ("shadow", 0o640, (0, 42)),
        ("suid", 0o4751, (1234, 5678)),
        ("plain", 0o644, (0, 0)),
    ):
        with open(os.path.join(etc, name), "w", encoding="utf-8") as fh:
            fh.write(name * 100)
        os.chown(os.path.join(etc, name), *owner)
        os.chmod(os.path.join(etc, name), mode)
    os.link(os.path.join(etc, "plain"), os.path.join(etc, "sub/plain.hardlink"))
    os.setxattr(os.path.join(etc, "plain"), "user.origin", b"prototype")
    os.setxattr(os.path.join(etc, "sub"), "user.dir", b"attr on a directory")
    os.setxattr(
        os.path.join(etc, "shadow"),
        "system.posix_acl_access",
        _posix_acl((ACL_USER_OBJ, 6, _UNDEFINED), (ACL_USER, 4, 1000), (ACL_GROUP_OBJ, 4, _UNDEFINED),
                   (ACL_MASK, 4, _UNDEFINED), (ACL_OTHER, 0, _UNDEFINED)),
    )  # fmt: skip
    os.mkfifo(os.path.join(etc, "fifo"))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.path.join(etc, "sock"))
    os.mknod(os.path.join(etc, "sub/blockdev"), 0o600 | stat.S_IFBLK, os.makedev(7, 0))
    os.symlink("../plain", os.path.join(etc, "sub/link"))
    os.symlink("/dangling/absolute", os.path.join(etc, "dangling"))
    os.chown(os.path.join(etc, "sub/dir"), 99, 98)
    os.chmod(os.path.join(etc, "sub/dir"), 0o2775)
    os.chmod(etc, 0o751)
    for dirpath, dirnames, filenames in os.walk(etc, topdown=False):  # leaves first: times stay put
        for name in [*filenames, *dirnames]:
            os.utime(os.path.join(dirpath, name), ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
    os.utime(etc, ns=(MTIME_NS, MTIME_NS))


def test_copies_are_faithful(quilt: RootFS, make_prototype: MakePrototype) -> None:
    prototype = make_prototype(_rich_etc)
    with quilt.generated(prototype) as root:
        for name in ("etc", "dev", "var", "home", "proc"):
            assert tree_checksum(os.path.join(root, name)) == tree_checksum(os.path.join(prototype, name)), (
                name
            )
        etc = os.path.join(root, "etc")
        assert os.getxattr(os.path.join(etc, "plain"), "user.origin") == b"prototype"
        assert os.getxattr(os.path.join(etc, "shadow"), "system.posix_acl_access") == os.getxattr(
            os.path.join(prototype, "etc/shadow"), "system.posix_acl_access"
        )
        # Hardlinked within the copy, not to the prototype.
        plain, linked = (
            os.lstat(os.path.join(etc, "plain")),
            os.lstat(os.path.join(etc, "sub/plain.hardlink")),
        )
        assert plain.st_ino == linked.st_ino and plain.st_nlink == 2
        assert plain.st_ino != os.lstat(os.path.join(prototype, "etc/plain")).st_ino
        # Special files recreated as what they are, never read.
        assert stat.S_ISFIFO(os.lstat(os.path.join(etc, "fifo")).st_mode)
        assert stat.S_ISSOCK(os.lstat(os.path.join(etc, "sock")).st_mode)
        assert stat.S_ISBLK(os.lstat(os.path.join(etc, "sub/blockdev")).st_mode)
        assert os.readlink(os.path.join(etc, "dangling")) == "/dangling/absolute"
        assert os.stat(os.path.join(root, "etc")).st_mtime_ns == MTIME_NS
        # Writable, and a change stays in the copy.
        with open(os.path.join(etc, "plain"), "a", encoding="utf-8") as fh:
            fh.write("changed")
        assert os.path.getsize(os.path.join(prototype, "etc/plain")) == 500
