"""Details of the primitives that backends rely on."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

from rootfs_core import ErrorId, RootFS, RootFSError, teardown
from rootfs_core.context import BuildContext, make_instance_dirs
from rootfs_core.store import Record, Store
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts, mount_options
from rootfs_core.testing.faults import FakeMounts


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
        assert {"ro", "nosuid", "nodev", "noexec"} <= mount_options(root)
        rfs.remove(root)
        assert instance_mounts(base_dir) == []
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


def test_a_long_copy_writes_nothing_on_a_terminal_by_itself(tmp_path: Path) -> None:
    """The library reports progress to a callback, if given one, and never
    writes to the terminal of the program that embeds it (a slow cp, a
    wrapper that waits first, with stderr on a pty). The command line draws
    it: tests/test_progress.py."""
    slow = tmp_path / "bin"
    slow.mkdir()
    (slow / "cp").write_text('#!/bin/sh\nsleep 1.6\nexec /bin/cp "$@"\n')
    (slow / "cp").chmod(0o755)
    (tmp_path / "src").mkdir()
    (tmp_path / "src/data").write_bytes(b"x" * 4096)
    (tmp_path / "dst").mkdir()
    code = (
        "import sys; from rootfs_core.syscalls import LinuxSyscalls; "
        f"LinuxSyscalls().copy_tree({str(tmp_path / 'src')!r}, {str(tmp_path / 'dst')!r}); "
        "sys.stderr.write('END')"
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
    assert shown == "END"
    assert (tmp_path / "dst/data").read_bytes() == b"x" * 4096


def test_mount_options_up_to_one_page_and_no_more(base_dir: str) -> None:
    """mount(2) copies one page of options (its NUL included) and cuts the
    rest silently: a page-long option string is refused before any mount."""
    page = os.sysconf("SC_PAGE_SIZE")
    store = Store(base_dir)
    instance_id = store.new_id()
    record = Record(instance_id, "none", "/", store.root_of(instance_id), 0.0, {})
    with store.claim_new(record) as claim:
        fake = FakeMounts()
        ctx = BuildContext(record, fake, store)
        make_instance_dirs(ctx)
        ctx.mount("none", ctx.root, "fakefs", data="o" * (page - 1))
        with pytest.raises(RootFSError) as info:
            ctx.mount("none", ctx.root, "fakefs", data="o" * page)
        assert info.value.error_id is ErrorId.ErrBindMountRoot
        assert f"take {page} bytes" in str(info.value) and f"limit of {page - 1}" in str(info.value)
        assert len(fake.mount_calls) == 1
        teardown.undo(record.steps, ctx.instance_dir, fake)
        store.delete(instance_id)
        claim.finish()
    assert fake.mounted == []
