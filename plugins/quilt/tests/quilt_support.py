"""Prototypes and checks the quilt tests share (imported by the test modules;
the fixtures themselves are in conftest.py)."""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable

from rootfs_core.store import Store
from rootfs_core.testing.prototypes import make_tiny_prototype

CHR = stat.S_IFCHR

# make_prototype(build) -> path: the conftest fixture's type
MakePrototype = Callable[[Callable[[str], object]], str]


def build_debian_like(path: str) -> str:
    """The layout of a merged-/usr Debian: ``bin``, ``sbin``, ``lib`` are
    relative symlinks into ``usr``, ``dev`` holds real device nodes and the
    absolute symlink ``fd -> /proc/self/fd``."""
    for name in (
        "usr/bin",
        "usr/sbin",
        "usr/lib",
        "etc",
        "home",
        "proc",
        "sys",
        "root",
        "var/log",
        "dev/pts",
    ):
        os.makedirs(os.path.join(path, name))
    os.makedirs(os.path.join(path, "tmp"), mode=0o1777)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib")):
        os.symlink(target, os.path.join(path, link))
    for name, major, minor in (
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("tty", 5, 0),
    ):
        os.mknod(os.path.join(path, "dev", name), 0o666 | CHR, os.makedev(major, minor))
    os.symlink("/proc/self/fd", os.path.join(path, "dev/fd"))
    for name, text in (
        ("etc/os-release", "ID=debian\n"),
        ("usr/sbin/init", "#!/bin/sh\n"),
        ("usr/lib/libc.so", "elf\n"),
        ("var/log/dpkg.log", "log\n"),
    ):
        with open(os.path.join(path, name), "w", encoding="utf-8") as fh:
            fh.write(text)
    return path


def tiny_with(*links: tuple[str, str], files: tuple[str, ...] = ()) -> Callable[[str], None]:
    """A builder: the tiny prototype plus empty files, and symlinks ``(link,
    target)`` replacing whatever was at ``link``."""

    def build(path: str) -> None:
        make_tiny_prototype(path)
        for link, target in links:
            if os.path.isdir(os.path.join(path, link)):
                shutil.rmtree(os.path.join(path, link))  # freshly built here, nothing mounted in it
            os.symlink(target, os.path.join(path, link))
        for name in files:
            open(os.path.join(path, name), "w").close()

    return build


def instance_dir(root: str) -> str:
    return os.path.dirname(root)


def copies(root: str) -> list[str]:
    """The instance's writable copies (``rw/<n>-<name>``)."""
    rw = os.path.join(instance_dir(root), "rw")
    return sorted(os.listdir(rw))


def records(base: str) -> list[str]:
    return Store(base).ids()
