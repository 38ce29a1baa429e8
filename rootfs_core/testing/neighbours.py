"""Neighbours: the other mount namespaces a real host has, for tests to meet.

Every test session runs in a mount namespace of its own with ``/`` rprivate
(see ``fixtures.pytest_configure``). There a mount exists in one place only,
and the kernel's busy test (``umount2(MNT_EXPIRE)``) sees every user of it.
A real host is different in two ways, and rootfs's promises must hold there:

- systemd makes ``/`` *rshared*: a mount made below it propagates to its
  peers and slaves (a bind of a shared mount joins its peer group, so the
  quilt's writable directories would appear in the prototype itself), and
  every namespace that is a slave of the host's (a service, a container
  started with ``rslave``) receives a copy of each mount rootfs makes;
- container runtimes and services started after a generate (``PrivateTmp``,
  ``runc``) hold *copies* of all our mounts in namespaces of their own, and
  one made before can be given a copy later (``machinectl bind``: a
  ``mover``). The busy test in ours cannot see a process that uses its
  copy, and unmounting ours leaves the copy, with the upper layer or
  writable copies under it, alive: deleting that data then pulls the
  ground from under the neighbour.

Each helper starts one such neighbour, waits until it is in place, and kills
and waits for it on exit, whatever happened. ``shared_namespace`` runs a
block of a test in a fresh mount namespace whose ``/`` is rshared, whatever
the session's mode.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import os
import re
import select
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Collection, Iterator
from typing import Any

from rootfs_core.mounttable import mount_points
from rootfs_core.syscalls import MS_PRIVATE, MS_REC, MS_SHARED, UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.runc import write_bundle

__all__ = [
    "HOLDS",
    "Container",
    "Holder",
    "Neighbour",
    "SharedNamespace",
    "copier",
    "holder",
    "in_shared_namespace",
    "mover",
    "runc_container",
    "shared_namespace",
    "watcher",
]

CLONE_NEWNS = 0x00020000
READY_TIMEOUT = 30.0  # seconds a neighbour may take to be in place
REPLY_TIMEOUT = 30.0  # seconds a holder may take to answer

# Runs in the holder, after ``unshare -m --propagation private`` has exec'd
# it in a namespace of its own. It uses the root the way ``how`` says (see
# ``HOLDS``), having written ``name`` there, then answers "read" (the file's
# content, read by path through the root) and "write HEX" (appended to the
# file, and written to a new file by path, so a root whose writable layer was
# deleted under it fails) until stdin closes. Everything is imported before
# the chroot (python keeps working after it: it is loaded; the root has no
# Python).
_HOLDER_CODE = r"""
import ctypes, os, sys
root, name, how = sys.argv[1], sys.argv[2], sys.argv[3]
os.chdir("/")
if how == "chroot":
    os.chroot(root)
    os.chdir("/")
    path = os.path.join("/", name)
else:
    path = os.path.join(root, name)
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
os.write(fd, b"held by %d\n" % os.getpid())
mapped = None
if how == "cwd":
    os.close(fd)
    fd = None
    os.chdir(os.path.dirname(path))
elif how == "mapped":
    # libc's mmap, not the mmap module's, which keeps a dup of the fd open.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t] + [ctypes.c_int] * 3 + [ctypes.c_long]
    mapped = libc.mmap(None, 4096, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
    if mapped == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), "mmap")
    os.close(fd)
    fd = None
sys.stdout.write("ready\n")
sys.stdout.flush()
count = 0
for line in sys.stdin:
    verb, _, arg = line.strip().partition(" ")
    try:
        if verb == "read":
            with open(path, "rb") as fh:
                reply = "ok " + fh.read().hex()
        elif verb == "write":
            data = bytes.fromhex(arg)
            if fd is not None:
                os.write(fd, data)
            else:
                with open(path, "ab") as fh:
                    fh.write(data)
            count += 1
            with open("%s.%d" % (path, count), "wb") as fh:
                fh.write(data)
            reply = "ok"
        else:
            reply = "err 0 unknown command"
    except OSError as exc:
        reply = "err %d %s" % (exc.errno or 0, exc)
    sys.stdout.write(reply + "\n")
    sys.stdout.flush()
"""
# How a holder uses its root, each a way ``fuser -m`` would see it: chrooted
# into it (a container), its file open with its working directory elsewhere,
# its working directory in it (no file open), or its file mapped (closed).
HOLDS = ("chroot", "open", "cwd", "mapped")

# Runs in a mover, in the caller's mount namespace at first: clones the
# mount tree at ``source`` (open_tree(OPEN_TREE_CLONE | AT_RECURSIVE): a
# detached copy), enters the mount namespace whose file is ``ns`` (setns),
# mounts the copy at ``target`` there (move_mount), takes its working
# directory into it if ``how`` is "use" ("/" otherwise), says it is in place
# and waits for stdin to close.
_MOVER_CODE = r"""
import ctypes, os, sys
source, target, ns, how = sys.argv[1:5]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def check(result, what):
    if result < 0:
        raise OSError(ctypes.get_errno(), "%s: %s" % (what, os.strerror(ctypes.get_errno())))
    return result
tree = check(libc.syscall(428, -100, os.fsencode(source), 0x1 | 0x8000 | os.O_CLOEXEC), "open_tree")
check(libc.setns(os.open(ns, os.O_RDONLY | os.O_CLOEXEC), 0x20000), "setns")
check(libc.syscall(429, tree, b"", -100, os.fsencode(target), 0x4), "move_mount")
os.close(tree)
os.chdir(target if how == "use" else "/")
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.read()
"""

# Runs in a copier or a watcher: says it is in place, then waits for stdin to
# close, with its working directory at "/" and no file open anywhere else.
_IDLE_CODE = r"""
import sys
sys.stdout.write("ready\n")
sys.stdout.flush()
sys.stdin.read()
"""


@dataclasses.dataclass
class Neighbour:
    """A process in a mount namespace of its own (``pid`` is the process in
    it: ``unshare`` execs, so the pid it was started with)."""

    pid: int
    proc: subprocess.Popen[bytes]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def comm(self) -> str:
        """Its command name, as the kernel (and ``ps``, and rootfs's
        messages) show it: ``python3``."""
        with open(f"/proc/{self.pid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().strip()

    def mount_points(self) -> list[str]:
        """Every mount point of its namespace, as it sees them. A chrooted
        process (a holder) sees only those below its root, relative to it."""
        with open(f"/proc/{self.pid}/mountinfo", "rb") as fh:
            return [os.fsdecode(_unescape(line.split(b" ")[4])) for line in fh]

    def mounts_below(self, path: str) -> list[str]:
        """Its mount points at or below ``path``."""
        prefix = path.rstrip("/") + "/"
        return [p for p in self.mount_points() if p == path or p.startswith(prefix)]

    def stop(self) -> None:
        """Kill it and wait for it (idempotent)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=60)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass  # a pipe to a dead process


@dataclasses.dataclass
class Holder(Neighbour):
    """A process using a root from a private mount namespace of its own:
    ``how`` (one of ``HOLDS``) it uses it, ``name`` its file (relative to the
    root)."""

    root: str
    name: str
    how: str

    def read(self) -> bytes:
        """The held file's content, read by path as the holder sees it."""
        return bytes.fromhex(self._ask("read"))

    def write(self, data: bytes) -> None:
        """Append ``data`` to the file (through the open file if it holds
        one) and write it to a new file by path; raise ``OSError`` with the
        holder's errno if either failed."""
        self._ask("write " + data.hex())

    def can_write(self) -> bool:
        """Whether a write (open file and new file) still works in its root."""
        try:
            self.write(b"still writable\n")
        except OSError:
            return False
        return True

    def _ask(self, command: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()
        reply = _read_line(self.proc, REPLY_TIMEOUT, f"holder {self.pid} answering {command.split()[0]!r}")
        status, _, rest = reply.partition(" ")
        if status == "ok":
            return rest
        code, _, message = rest.partition(" ")
        raise OSError(int(code), f"holder {self.pid}: {message}")


@dataclasses.dataclass
class Container:
    """A container runc runs detached: its ``name`` and its init's ``pid``."""

    name: str
    pid: int
    bundle: str


def _read_line(proc: subprocess.Popen[bytes], timeout: float, what: str) -> str:
    """One line of ``proc``'s stdout, or an error naming ``what`` (with its
    stderr) if it exits or takes longer than ``timeout`` seconds."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else b""
    if not line.endswith(b"\n"):
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        raise RuntimeError(f"{what}: no answer (exit status {proc.returncode}): {err.strip()!r}")
    return line.decode().rstrip("\n")


def _start(argv: list[str], what: str) -> tuple[int, subprocess.Popen[bytes]]:
    """Start a neighbour (cwd ``/``, no fd of ours but its pipes) and wait
    for its "ready"."""
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd="/",
        close_fds=True,
    )
    try:
        line = _read_line(proc, READY_TIMEOUT, what)
        if line != "ready":
            raise RuntimeError(f"{what}: said {line!r} instead of 'ready'")
        if os.readlink(f"/proc/{proc.pid}/ns/mnt") == os.readlink("/proc/self/ns/mnt"):
            raise RuntimeError(f"{what}: pid {proc.pid} is not in a mount namespace of its own")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        raise
    return proc.pid, proc


def _unescape(raw: bytes) -> bytes:
    """mountinfo writes space, tab, newline and backslash as ``\\ooo``."""
    return re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), raw)


def _python(code: str, *args: str) -> list[str]:
    # -I: no user site or PYTHONPATH, so nothing is imported from a root or the checkout.
    return [sys.executable, "-I", "-c", code, *args]


@contextlib.contextmanager
def holder(root: str, name: str = "tmp/held", how: str = "chroot") -> Iterator[Holder]:
    """A process that *uses* ``root`` from a private mount namespace of its
    own. By default (``how="chroot"``) as a container does: chrooted into
    it, its working directory at its ``/``, and ``name`` (which it wrote)
    held open. ``open``: only ``name`` open (working directory ``/``);
    ``cwd``: only its working directory in ``name``'s directory; ``mapped``:
    only ``name`` mapped in memory. Its pid is the one inside the namespace
    (``unshare`` execs).

    Why: rootfs's busy test asks the kernel about the mount in *its*
    namespace; this process uses a copy, which that test cannot see. A remove
    must still refuse (``ErrRootBusy`` naming this pid) and change nothing.
    """
    if how not in HOLDS:
        raise ValueError(f"how={how!r}: expected one of {', '.join(HOLDS)}")
    argv = ["unshare", "-m", "--propagation", "private", "--", *_python(_HOLDER_CODE, root, name, how)]
    pid, proc = _start(argv, f"holder ({how}) of {root}")
    neighbour = Holder(pid, proc, root, name, how)
    try:
        yield neighbour
    finally:
        neighbour.stop()


@contextlib.contextmanager
def copier() -> Iterator[Neighbour]:
    """A process in a private mount namespace of its own, made now, that
    uses no root: its working directory is ``/`` and it has no file open in
    any root. It merely holds copies of every mount that exists now.

    Why: a service started after a generate (systemd's ``PrivateTmp=``, a
    container runtime's helper) does exactly this. Its copies keep the
    instance's filesystems alive after we unmount ours, and with them the
    writable data below them: that data must not be deleted while the copy
    lives, yet our remove must not fail because of it.
    """
    argv = ["unshare", "-m", "--propagation", "private", "--", *_python(_IDLE_CODE)]
    pid, proc = _start(argv, "copier")
    neighbour = Neighbour(pid, proc)
    try:
        yield neighbour
    finally:
        neighbour.stop()


@contextlib.contextmanager
def mover(into: Neighbour, source: str, target: str, *, use: bool = False) -> Iterator[Neighbour]:
    """A process that moves a copy of the mounts at and below ``source``
    (ours) into the mount namespace of ``into`` (made before them), at
    ``target`` there (an existing directory), and stays in that namespace:
    its working directory in the copy if ``use``, else ``/``. The copy goes
    with the namespace (once ``into`` and this process are gone).

    Why: a namespace made *before* a generate holds a copy this way, at a
    path of its own (``machinectl bind`` adds a mount to a running
    container with ``open_tree`` and ``move_mount``, and a runtime a volume
    so). The namespace was not cloned after the mounts were made, yet a
    remove must find the copy all the same: refuse while this process uses
    it, keep the data while it merely exists.
    """
    namespace = f"/proc/{into.pid}/ns/mnt"
    argv = _python(_MOVER_CODE, source, target, namespace, "use" if use else "copy")
    pid, proc = _start(argv, f"mover of {source} into {into.pid}'s namespace")
    neighbour = Neighbour(pid, proc)
    try:
        if os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink(namespace):
            raise RuntimeError(f"mover {pid} is not in the namespace of {into.pid}")
        yield neighbour
    finally:
        neighbour.stop()


@contextlib.contextmanager
def watcher() -> Iterator[Neighbour]:
    """A process in a mount namespace of its own that is a *slave* of the
    current one, as a systemd service or a container started with
    ``rslave`` is of the host's: every mount made from now on below a shared
    mount of ours is propagated into it (read its ``mounts_below``).

    Why: on a host whose ``/`` is shared, a mount rootfs makes below it
    appears in every such namespace, where nothing will ever unmount it.
    """
    argv = ["unshare", "-m", "--propagation", "slave", "--", *_python(_IDLE_CODE)]
    pid, proc = _start(argv, "watcher")
    neighbour = Neighbour(pid, proc)
    try:
        yield neighbour
    finally:
        neighbour.stop()


def _runc_state(name: str) -> dict[str, Any] | None:
    proc = subprocess.run(["runc", "state", name], capture_output=True, check=False, timeout=60)
    if proc.returncode != 0:
        return None
    state: dict[str, Any] = json.loads(proc.stdout)
    return state


@contextlib.contextmanager
def runc_container(
    root: str, bundle_dir: str, args: Collection[str] = ("sleep", "600")
) -> Iterator[Container]:
    """A container ``runc run -d`` runs in ``root`` (which needs a
    ``sleep``: a busybox prototype), its bundle in ``bundle_dir``; yields its
    name and its init's pid; ``runc kill`` and ``runc delete -f`` on exit.

    Why: a container is the neighbour rootfs exists for. runc makes a mount
    namespace of its own, with a copy of our root as its ``/``: the busy test
    in our namespace does not see it. Skips the test if runc is absent.
    """
    import pytest

    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (apt-get install runc)")
    write_bundle(bundle_dir, root, list(args))
    name = f"rootfs-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        run = subprocess.run(
            ["runc", "run", "-d", "--bundle", bundle_dir, name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the container keeps these: a pipe would never close
            stderr=subprocess.DEVNULL,
            cwd="/",
            timeout=120,
            check=False,
        )
        state = _runc_state(name)
        if run.returncode != 0 or state is None or state.get("status") != "running":
            raise RuntimeError(f"runc run -d {name} failed (exit status {run.returncode}, state {state})")
        yield Container(name, int(state["pid"]), bundle_dir)
    finally:
        _runc_stop(name)


def _runc_stop(name: str) -> None:
    """Kill the container, wait until runc says it stopped, delete it."""
    subprocess.run(["runc", "kill", name, "KILL"], capture_output=True, check=False, timeout=60)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        state = _runc_state(name)
        if state is None or state.get("status") == "stopped":
            break
        time.sleep(0.05)
    subprocess.run(["runc", "delete", "-f", name], capture_output=True, check=False, timeout=60)


@dataclasses.dataclass
class SharedNamespace:
    """What ``shared_namespace`` found when the block ended: ``leaked``, the
    mounts made in it and left (unmounted by it, deepest first)."""

    leaked: list[str] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def shared_namespace(keep: Collection[str] = ()) -> Iterator[SharedNamespace]:
    """Run the block in a fresh mount namespace whose ``/`` is rshared, as
    systemd makes it on a real host; back in the previous namespace (and
    working directory) afterwards.

    The new namespace is cut from the one it was copied from (made rprivate
    first, then rshared), so nothing made in it reaches the session's
    namespace or the host's, whatever their propagation. Child processes
    started in the block (``rootfs`` commands) run in it too. Mounts made in
    the block and still there at its end, except those in ``keep``, are
    reported in ``leaked`` and unmounted. The process must be single-threaded
    (the kernel switches the calling thread only).
    """
    if threading.active_count() != 1:
        raise RuntimeError("shared_namespace needs a single-threaded process")
    libc = ctypes.CDLL(None, use_errno=True)
    syscalls = LinuxSyscalls()
    cwd = os.getcwd()
    previous = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    result = SharedNamespace()
    try:
        if libc.unshare(CLONE_NEWNS) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"unshare(CLONE_NEWNS): {os.strerror(err)}")
        before: set[str] | None = None
        try:
            syscalls.mount("none", "/", "", MS_REC | MS_PRIVATE, "")
            syscalls.mount("none", "/", "", MS_REC | MS_SHARED, "")
            before = set(mount_points())
            yield result
            result.leaked = [p for p in mount_points() if p not in before and p not in keep]
        finally:
            if before is not None:
                for point in sorted(set(mount_points()) - before, key=len, reverse=True):
                    try:
                        syscalls.umount(point, UMOUNT_NOFOLLOW)
                    except OSError:
                        pass  # the namespace and its mounts go when we leave it
            if libc.setns(previous, CLONE_NEWNS) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back to the previous mount namespace: {os.strerror(err)}")
            os.chdir(cwd)
    finally:
        os.close(previous)


def in_shared_namespace(argv: list[str]) -> list[str]:
    """``argv`` to run in a mount namespace of its own whose ``/`` is rshared
    (cut from ours first, so nothing it mounts reaches us): for one command
    that must see a real host's propagation."""
    script = 'mount --make-rshared / && exec "$@"'
    return ["unshare", "-m", "--propagation", "private", "--", "sh", "-c", script, "sh", *argv]
