"""The prototypes the benchmark generates from.

busybox: ``rootfs_core.sample.build_sample`` (a few hundred entries), the
smallest realistic root. Debian: ``debootstrap --variant=minbase bookworm``
when asked for and possible (about 40 s and 200 MB), else a synthetic tree of
the same shape (~6,800 files, ``bin``/``sbin``/``lib`` symlinks into ``usr``,
device nodes in ``dev``), because what item 5 asks is whether the cost of a
generate depends on the size of the prototype, and only the shape matters
for that, not the bytes of real packages.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys

import hygiene

from rootfs_core.sample import build_sample

DEBIAN_FILES = 6_800
DEBIAN_SUITE = "bookworm"


def busybox(path: str) -> str:
    """Build the sample prototype at ``path``; return a description."""
    return build_sample(path)


def debian(path: str, *, try_debootstrap: bool) -> str:
    """A Debian-minbase-sized prototype at ``path``; return how it was made.

    debootstrap mounts proc and sys inside its target while it runs and
    unmounts them when it ends; the caller's mount check covers a failure
    half-way, since ``path`` lies below the benchmark's own directory.
    """
    if try_debootstrap and shutil.which("debootstrap"):
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", DEBIAN_SUITE, path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if proc.returncode == 0:
            return f"debootstrap --variant=minbase {DEBIAN_SUITE} ({count_files(path)} files)"
        print(
            f"bench: debootstrap failed ({proc.stderr.decode(errors='replace').strip()[-300:]}); "
            "synthesising a tree of the same shape",
            file=sys.stderr,
        )
        if not hygiene.delete_tree(path):
            raise RuntimeError(f"debootstrap left {path} mounted on or undeletable; not synthesising over it")
    synthesise_debian(path)
    return f"synthetic Debian-minbase shape ({count_files(path)} files)"


def synthesise_debian(path: str, files: int = DEBIAN_FILES, seed: int = 8) -> None:
    """A tree shaped like a bookworm minbase: merged /usr, most files under
    usr/share and usr/lib, a few hundred in etc and var, real device nodes.

    Sizes are small (the overlay never reads file contents at mount time), so
    building it takes a second instead of a download.
    """
    rng = random.Random(seed)
    os.makedirs(path)
    for top in (
        "usr/bin",
        "usr/sbin",
        "usr/lib/x86_64-linux-gnu",
        "usr/lib64",
        "etc",
        "var/lib/dpkg/info",
        "var/cache",
        "var/log",
        "home",
        "root",
        "proc",
        "sys",
        "dev",
        "run",
        "tmp",
        "opt",
        "srv",
        "mnt",
    ):
        os.makedirs(os.path.join(path, top), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    for link, target in (
        ("bin", "usr/bin"),
        ("sbin", "usr/sbin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
    ):
        os.symlink(target, os.path.join(path, link))
    # Roughly how minbase's files spread over its directories.
    share = {
        "usr/share/doc": 0.22,
        "usr/share/locale": 0.10,
        "usr/share/zoneinfo": 0.25,
        "usr/share/perl": 0.08,
        "usr/share/man": 0.05,
        "usr/lib/x86_64-linux-gnu": 0.08,
        "usr/lib/python3": 0.0,
        "usr/bin": 0.05,
        "usr/sbin": 0.02,
        "etc": 0.05,
        "var/lib/dpkg/info": 0.10,
    }
    made = 0
    for directory, fraction in share.items():
        count = int(files * fraction)
        for i in range(count):
            sub = os.path.join(path, directory)
            if count > 200:  # big directories are trees of small ones in a real root
                sub = os.path.join(sub, f"d{i // 40:03d}")
            os.makedirs(sub, exist_ok=True)
            with open(os.path.join(sub, f"f{i:05d}"), "wb") as fh:
                fh.write(os.urandom(rng.choice((64, 512, 2048, 8192))))
            made += 1
    rest = os.path.join(path, "usr/share/misc")
    os.makedirs(rest, exist_ok=True)
    for i in range(max(0, files - made)):
        with open(os.path.join(rest, f"m{i:05d}"), "wb") as fh:
            fh.write(b"x" * 100)
    if os.geteuid() == 0:
        for name, minor in (("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)):
            os.mknod(os.path.join(path, "dev", name), 0o666 | 0o020000, os.makedev(1, minor))
    os.symlink("/proc/self/fd", os.path.join(path, "dev/fd"))


def count_files(path: str) -> int:
    """Non-directory entries below ``path`` (not following symlinks)."""
    total = 0
    for _dirpath, _dirnames, filenames in os.walk(path):
        total += len(filenames)
    return total
