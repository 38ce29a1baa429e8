"""Details of the primitives that backends rely on."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

from rootfs_core import RootFS
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import mounts_below


def _options_of(mount_point: str) -> set[str]:
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            fields = line.split()
            if fields[4] == mount_point:
                return set(fields[5].split(","))
    raise AssertionError(f"{mount_point} is not mounted")


def test_read_only_bind_keeps_nosuid_nodev_noexec(rfs: RootFS, prototype: str, base_dir: str) -> None:
    holder = os.path.dirname(prototype)
    locked = os.path.join(holder, "locked")
    os.mkdir(locked)
    sys_ = LinuxSyscalls()
    sys_.mount("tmpfs", locked, "tmpfs", 0x2 | 0x4 | 0x8, "size=4M")  # nosuid, nodev, noexec
    try:
        for name in ("etc", "tmp"):
            os.mkdir(os.path.join(locked, name))
        root = rfs.generate(locked)
        assert {"ro", "nosuid", "nodev", "noexec"} <= _options_of(root)
        rfs.remove(root)
        assert mounts_below(base_dir) == []
    finally:
        sys_.umount(locked, UMOUNT_NOFOLLOW)
        os.rmdir(locked)


def test_copy_skips_filesystems_mounted_inside_the_source(leak_guard: None, tmp_path: Path) -> None:
    source, inner, target = tmp_path / "src", tmp_path / "src/proc", tmp_path / "dst"
    inner.mkdir(parents=True)
    target.mkdir()
    (source / "kept").write_text("kept\n")
    sys_ = LinuxSyscalls()
    sys_.mount("tmpfs", str(inner), "tmpfs", 0, "size=1M")
    try:
        (inner / "hidden").write_text("not copied\n")
        sys_.copy_tree(str(source), str(target))
    finally:
        sys_.umount(str(inner), UMOUNT_NOFOLLOW)
    assert (target / "kept").read_text() == "kept\n"
    assert (target / "proc").is_dir() and not (target / "proc/hidden").exists()


def test_long_copy_shows_progress_on_a_terminal(tmp_path: Path) -> None:
    """A slow cp (a wrapper that waits first) run with stderr on a pty."""
    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "cp").write_text('#!/bin/sh\nsleep 1.6\nexec /bin/cp "$@"\n')
    (slow / "cp").chmod(0o755)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/data").write_bytes(b"x" * 4096)
    (tmp_path / "dst").mkdir()
    code = (
        "import sys; from rootfs_core.syscalls import LinuxSyscalls; "
        f"LinuxSyscalls().copy_tree({str(tmp_path / 'src')!r}, {str(tmp_path / 'dst')!r})"
    )
    leader, follower = pty.openpty()
    env = dict(os.environ, PATH=f"{slow}:{os.environ['PATH']}")
    proc = subprocess.run(
        [sys.executable, "-c", code], stderr=follower, stdout=subprocess.DEVNULL, env=env, timeout=30, cwd="/"
    )
    os.close(follower)
    shown = os.read(leader, 65536).decode()
    os.close(leader)
    assert proc.returncode == 0
    assert "rootfs: copying src:" in shown
    assert (tmp_path / "dst/data").read_bytes() == b"x" * 4096
