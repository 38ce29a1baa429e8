"""Removing a root a process still uses, through the command line, on the
real backends (the core's tests prove the API over an in-test backend).

Proven for a working directory at the top of the root, in a writable
directory, in a read-only part, an open file, and a process chrooted into
the root (a running container): ``rootfs remove`` exits 1 with
``ErrRootBusy`` naming the busy mount, keeps the record, nothing is deleted
through the live mount, and a later remove succeeds once the process is
gone. Stricter: the failed remove changes nothing at all (every mount is
checked before any is touched), so the root stays ready and working, with
what was written in it, on the quilt (a root with mounts on it) as on overlayfs.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest
from integration_support import assert_cli_error, assert_works, generate_json, list_json, run_cli, text

from rootfs_core.testing.checks import instance_mounts, mounts_below

BUSY = re.compile(r"ErrRootBusy: (.+?) is busy: ")
HOLDERS = [("cwd", "."), ("cwd", "tmp"), ("cwd", "usr"), ("cwd", "var"), ("open", "etc/hostname")]


def _holder(root: str, how: str, where: str) -> subprocess.Popen[bytes]:
    """A process that keeps ``root/where`` busy: its cwd, or an open file."""
    path = os.path.join(root, where)
    if how == "cwd":
        return subprocess.Popen(["sleep", "600"], cwd=path)
    if how == "chroot":
        return subprocess.Popen(["chroot", root, "/bin/sleep", "600"], cwd="/")
    with open(path, "rb") as fh:  # the child keeps it open as its stdin; ours closes
        return subprocess.Popen(["sleep", "600"], stdin=fh, cwd="/")


@pytest.fixture
def held() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Holder processes to kill at the end, whatever happened."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _release(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()
    procs.clear()


@pytest.mark.parametrize(("how", "where"), HOLDERS)
def test_busy_remove_fails_clearly_keeps_the_record_and_later_succeeds(
    base_dir: str,
    backend: str,
    prototype: str,
    held: list[subprocess.Popen[bytes]],
    how: str,
    where: str,
) -> None:
    """Exit 1, ``ErrRootBusy`` naming the busy mount (the root or the mount
    holding the busy path), record kept, nothing deleted through the mount;
    once the process is gone, ``rootfs remove`` succeeds and leaves nothing."""
    root = generate_json(base_dir, backend, prototype)["root"]
    held.append(_holder(root, how, where))
    failed = run_cli(base_dir, "remove", root)
    assert_cli_error(failed, "ErrRootBusy")
    match = BUSY.search(text(failed.stderr))
    assert match, text(failed.stderr)
    named = match.group(1)
    busy_path = os.path.normpath(os.path.join(root, where))
    assert (busy_path + "/").startswith(named + "/") and named in mounts_below(root), named
    assert [row["root"] for row in list_json(base_dir)] == [root]  # the record is kept
    assert os.path.isfile(os.path.join(prototype, "etc/hostname"))
    _release(held)
    again = run_cli(base_dir, "remove", root)
    assert again.returncode == 0, text(again.stderr)
    assert list_json(base_dir) == []
    assert instance_mounts(base_dir) == []


def _ready_cases() -> list[object]:
    cases: list[object] = []
    for backend in ("overlayfs", "quilt"):
        for how, where in HOLDERS:
            cases.append(pytest.param(backend, how, where, id=f"{backend}-{how}-{where}"))
    return cases


@pytest.mark.parametrize(("backend", "how", "where"), _ready_cases(), indirect=["backend"])
def test_busy_remove_leaves_the_root_ready_and_working(
    base_dir: str,
    backend: str,
    prototype: str,
    held: list[subprocess.Popen[bytes]],
    how: str,
    where: str,
) -> None:
    """After the failed remove the instance is exactly as before: listed as
    ready, every mount in place, what was written in it still there, and it
    still works."""
    root = generate_json(base_dir, backend, prototype)["root"]
    for directory in ("tmp", "var", "etc"):
        with open(os.path.join(root, directory, "written"), "w") as fh:
            fh.write(directory)
    mounts = mounts_below(root)
    held.append(_holder(root, how, where))
    try:
        assert_cli_error(run_cli(base_dir, "remove", root), "ErrRootBusy")
        assert [(r["root"], r["state"]) for r in list_json(base_dir)] == [(root, "ready")]
        assert mounts_below(root) == mounts
        for directory in ("tmp", "var", "etc"):
            with open(os.path.join(root, directory, "written")) as fh:
                assert fh.read() == directory
        assert_works(root)
    finally:
        _release(held)
        assert run_cli(base_dir, "remove", root).returncode == 0


@pytest.mark.parametrize("backend", ["overlayfs", "quilt"], indirect=True)
def test_a_running_container_keeps_its_root(
    base_dir: str, backend: str, busybox_prototype: str, held: list[subprocess.Popen[bytes]]
) -> None:
    """A process chrooted into the root (a container still running) makes
    remove fail with ``ErrRootBusy``; the root stays ready and the container
    keeps running; once it is gone, remove succeeds."""
    root = generate_json(base_dir, backend, busybox_prototype)["root"]
    held.append(_holder(root, "chroot", "."))
    try:
        assert_cli_error(run_cli(base_dir, "remove", root), "ErrRootBusy")
        assert held[0].poll() is None
        assert [(r["root"], r["state"]) for r in list_json(base_dir)] == [(root, "ready")]
        assert os.path.isfile(os.path.join(root, "bin/busybox"))
    finally:
        _release(held)
        assert run_cli(base_dir, "remove", root).returncode == 0


@pytest.mark.parametrize("option", ["--force", "--lazy", "-f"])
def test_no_forced_or_lazy_remove_is_offered(base_dir: str, option: str) -> None:
    """``remove`` has no force or lazy (MNT_DETACH) option, so there is no
    way to detach a busy root and delete under it: a usage error (exit 2).
    Whoever adds one must add its tests (docs/reliability.md)."""
    proc = run_cli(base_dir, "remove", option, "0123456789ab")
    assert proc.returncode == 2, text(proc.stderr)
    assert "Traceback" not in text(proc.stderr)
