"""Small prototypes built in a test, with every kind of file a real one has."""

from __future__ import annotations

import os
import socket

# The seed's writable directories, which the quilt backend needs.
SEED_DIRS = ("proc", "dev", "etc", "home", "sbin", "var", "tmp")
ODD_NAME = b"caf\xe9-\xff.txt"  # not valid UTF-8


def make_tiny_prototype(path: str) -> str:
    """Fill ``path`` (created if needed) with dirs, files, a symlink, a fifo,
    a socket, a device node (as root), a hardlink and a non-UTF-8 name."""
    os.makedirs(path, exist_ok=True)
    for name in (*SEED_DIRS, "usr/bin", "usr/lib", "root"):
        os.makedirs(os.path.join(path, name), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    _write(path, "etc/hostname", b"prototype\n")
    _write(path, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    _write(path, "usr/bin/tool", b"#!/bin/sh\necho tool\n", 0o755)
    _write(path, "var/log.txt", b"log line\n")
    _write(path, "home/readme", b"hello\n")
    os.makedirs(os.path.join(path, "etc/deep/er"), exist_ok=True)
    _write(path, "etc/deep/er/file", b"deep\n")
    os.symlink("usr/bin", os.path.join(path, "bin"))
    os.link(os.path.join(path, "etc/hostname"), os.path.join(path, "etc/hostname.link"))
    os.mkfifo(os.path.join(path, "dev/fifo"))
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(os.path.join(path, "var/sock"))
    if os.geteuid() == 0:
        os.mknod(os.path.join(path, "dev/null"), 0o666 | 0o020000, os.makedev(1, 3))
        os.mknod(os.path.join(path, "dev/zero"), 0o666 | 0o020000, os.makedev(1, 5))
    with open(os.path.join(os.fsencode(path), b"home", ODD_NAME), "wb") as fh:
        fh.write(b"odd\n")
    return path


def _write(root: str, relative: str, content: bytes, mode: int = 0o644) -> None:
    full = os.path.join(root, relative)
    with open(full, "wb") as fh:
        fh.write(content)
    os.chmod(full, mode)
