"""The helper processes rootfs starts die with it: a SIGKILLed rootfs leaves
no ``cp`` writing into an instance, nor a half-started FUSE program (whose
daemon, once it has mounted, must outlive it). Only ``cp`` inherits the fds
registered with ``inherit_fd``."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from rootfs_core import syscalls
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls, inherit_fd, inheriting, release_fd
from rootfs_core.testing.checks import is_gone, process_state
from rootfs_core.testing.fixtures import remove_scratch, scratch_dir

# The process rootfs runs in: it registers an fd to inherit, then starts a
# helper (and waits for it) until the test SIGKILLs it.
CHILD = """
import os, sys, time
from rootfs_core.syscalls import LinuxSyscalls, inheriting
what, marker, source, target, *argv = sys.argv[1:]
with inheriting(os.open(marker, os.O_RDONLY)):
    if what == "copy":
        LinuxSyscalls().copy_tree(source, target)
    else:
        LinuxSyscalls().run_mount_program(argv, target)
print("returned", flush=True)
time.sleep(60)
"""


@pytest.fixture
def tmpfs(leak_guard: None) -> Iterator[str]:
    """A small tmpfs of the test's own, unmounted at teardown."""
    holder = scratch_dir("helpers-")
    LinuxSyscalls().mount("rootfs-test", holder, "tmpfs", 0, "size=8M")
    try:
        yield holder
    finally:
        LinuxSyscalls().umount(holder, UMOUNT_NOFOLLOW)
        remove_scratch(holder)


@contextlib.contextmanager
def leased(path: str) -> Iterator[None]:
    """A write lease on ``path``: whoever opens it (``cp``, to copy it) blocks,
    in a killable sleep, until the lease is released (or for the kernel's
    lease-break-time, 45 s by default). A copy that stays running exactly
    as long as the test needs, whatever the speed of the machine."""
    before = signal.signal(signal.SIGIO, signal.SIG_IGN)  # the lease holder is told of the open so
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        yield
    finally:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        os.close(fd)
        signal.signal(signal.SIGIO, before)


def start(what: str, marker: str, source: str, target: str, *argv: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD, what, marker, source, target, *argv],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def argv_of(pid: int) -> list[bytes]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().split(b"\0")[:-1]
    except OSError:
        return []


def wait_for_child(parent: subprocess.Popen[bytes], program: str, timeout: float = 4.0) -> int:
    """The pid of ``parent``'s child running ``program`` (once it has been
    exec'd, past setpriv)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name in os.listdir("/proc"):
            found = process_state(int(name)) if name.isdigit() else None
            if found is not None and found.parent == parent.pid:
                argv = argv_of(int(name))
                if argv and os.path.basename(argv[0]) == program.encode():
                    return int(name)
        if parent.poll() is not None:
            _, err = parent.communicate()
            pytest.fail(f"the rootfs process exited ({parent.returncode}): {err.decode()}")
        time.sleep(0.01)
    pytest.fail(f"no {program} started by {parent.pid} within {timeout} s")


def fd_targets(pid: int) -> list[str]:
    targets = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            targets.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return targets


def kill_and_reap(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.communicate()


def make_source(tmpfs: str) -> tuple[str, str, str]:
    source, target, marker = (os.path.join(tmpfs, name) for name in ("source", "target", "marker"))
    os.makedirs(os.path.join(source, "a/b"))
    os.mkdir(target)
    for path in (marker, os.path.join(source, "a/first"), os.path.join(source, "a/b/slow")):
        with open(path, "wb") as fh:
            fh.write(b"data\n")
    return source, target, marker


def test_cp_dies_with_rootfs_and_holds_the_inherited_fd(tmpfs: str) -> None:
    source, target, marker = make_source(tmpfs)
    with leased(os.path.join(source, "a/b/slow")):
        rootfs = start("copy", marker, source, target)
        cp = 0
        try:
            cp = wait_for_child(rootfs, "cp")
            time.sleep(0.1)
            assert not is_gone(cp, 0), "cp finished: the lease did not hold it"
            inherited = fd_targets(cp)
            rootfs.send_signal(signal.SIGKILL)
            rootfs.wait()
            assert is_gone(cp, within=1.0), f"cp ({cp}) outlived the rootfs process that started it"
            assert marker in inherited  # so a lock on it is held for as long as cp runs
        finally:
            kill_and_reap(rootfs)
            if cp and not is_gone(cp, 0):
                os.kill(cp, signal.SIGKILL)
                is_gone(cp, 1.0)


def test_a_mount_program_dies_with_rootfs_and_inherits_nothing(tmpfs: str) -> None:
    """A FUSE program killed before it has mounted (here one that never
    does); it never sees the fds registered for cp."""
    _, target, marker = make_source(tmpfs)
    rootfs = start("mount", marker, "", target, "sleep", "30")
    program = 0
    try:
        program = wait_for_child(rootfs, "sleep")
        assert marker not in fd_targets(program)
        rootfs.send_signal(signal.SIGKILL)
        rootfs.wait()
        assert is_gone(program, within=1.0), "the mount program outlived the rootfs process"
    finally:
        kill_and_reap(rootfs)
        if program and not is_gone(program, 0):
            os.kill(program, signal.SIGKILL)
            is_gone(program, 1.0)


def test_the_daemon_a_mount_program_forks_outlives_rootfs(tmpfs: str) -> None:
    """Like fuse-overlayfs: the program forks its daemon and exits; fork
    clears the death signal, so the daemon survives a SIGKILLed rootfs (it
    serves a mount), and it holds none of the registered fds either."""
    _, target, marker = make_source(tmpfs)
    pidfile = os.path.join(tmpfs, "daemon.pid")
    script = f"sleep 30 </dev/null >/dev/null 2>&1 & echo $! > {pidfile}"
    rootfs = start("mount", marker, "", target, "sh", "-c", script)
    daemon = 0
    try:
        assert rootfs.stdout is not None
        assert rootfs.stdout.readline() == b"returned\n", rootfs.stderr.read() if rootfs.stderr else ""
        with open(pidfile) as fh:
            daemon = int(fh.read())
        assert os.path.basename(argv_of(daemon)[0]) == b"sleep"
        assert marker not in fd_targets(daemon)
        rootfs.send_signal(signal.SIGKILL)
        rootfs.wait()
        time.sleep(0.2)
        assert not is_gone(daemon, 0), "the daemon died with rootfs"
    finally:
        kill_and_reap(rootfs)
        if daemon and not is_gone(daemon, 0):
            os.kill(daemon, signal.SIGKILL)
            is_gone(daemon, 1.0)


def test_without_setpriv_helpers_run_as_they_are(tmpfs: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where setpriv is missing (found out once), cp runs directly, and works."""
    source, target, _ = make_source(tmpfs)
    bin_dir = os.path.join(tmpfs, "bin")
    os.mkdir(bin_dir)
    os.symlink("/usr/bin/cp" if os.path.exists("/usr/bin/cp") else "/bin/cp", os.path.join(bin_dir, "cp"))
    monkeypatch.setenv("PATH", bin_dir)
    monkeypatch.setattr(syscalls, "_setpriv", syscalls._UNRESOLVED)
    assert syscalls.dying_with_parent(["cp", "x"]) == ["cp", "x"]
    assert syscalls._setpriv is None
    LinuxSyscalls().copy_tree(source, target)
    with open(os.path.join(target, "a/b/slow"), "rb") as fh:
        assert fh.read() == b"data\n"


def test_setpriv_is_used_where_it_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(syscalls, "_setpriv", syscalls._UNRESOLVED)
    argv = syscalls.dying_with_parent(["cp", "-a"])
    if syscalls._setpriv is None:
        pytest.skip("no setpriv with --pdeathsig here")
    assert argv == [syscalls._setpriv, "--pdeathsig", "KILL", "--", "cp", "-a"]


def test_inherited_fds_belong_to_one_thread() -> None:
    seen: list[list[int]] = []
    with inheriting(7):
        inherit_fd(9)
        assert syscalls._inherited_fds() == [7, 9]
        thread = threading.Thread(target=lambda: seen.append(list(syscalls._inherited_fds())))
        thread.start()
        thread.join()
        release_fd(9)
    assert seen == [[]]
    assert syscalls._inherited_fds() == []
    with pytest.raises(ValueError):
        release_fd(7)
    with pytest.raises(OSError) as info, inheriting(8):
        raise OSError(errno.EIO, "a copy failed")
    assert info.value.errno == errno.EIO and syscalls._inherited_fds() == []


@pytest.mark.parametrize("setpriv", ["found", "missing"])
def test_a_missing_program_is_file_not_found(setpriv: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As subprocess says it, with or without setpriv in between."""
    if setpriv == "missing":
        monkeypatch.setattr(syscalls, "_setpriv", None)
    with pytest.raises(FileNotFoundError):
        LinuxSyscalls().run_mount_program(["rootfs-no-such-program", "x"], "/nonexistent")
