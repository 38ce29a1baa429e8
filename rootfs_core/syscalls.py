"""The kernel calls rootfs makes, behind one replaceable object.

Like the seed's ``SyscallFS``, every call that changes the host goes through a
``Syscalls`` object. Production code uses ``LinuxSyscalls``; tests wrap it to
make any single call fail (``rootfs_core.testing.faults``) or replace the
mount calls for a filesystem this kernel lacks (aufs). Nothing else in rootfs
mounts, unmounts, creates or deletes.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

# mount(2) flags (linux/mount.h)
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
# umount2(2) flags
MNT_EXPIRE = 0x4
UMOUNT_NOFOLLOW = 0x8

_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_EMPTY_PATH = 0x1000
_STATX_MNT_ID = 0x1000
_STATX_ATTR_MOUNT_ROOT = 0x2000
_STATX_SIZE = 256


@runtime_checkable
class Syscalls(Protocol):
    """Everything rootfs asks of the kernel. Paths are absolute ``str``."""

    def mkdir(self, path: str, mode: int) -> None:
        """Create one directory (not its parents); fail if it exists."""

    def rmdir(self, path: str) -> None:
        """Remove one empty directory."""

    def chmod(self, path: str, mode: int) -> None:
        """Set a mode exactly (``mkdir`` is subject to the umask)."""

    def chown(self, path: str, uid: int, gid: int) -> None:
        """Set the owner of ``path`` (not followed if a symlink)."""

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        """mount(2)."""

    def umount(self, target: str, flags: int) -> None:
        """umount2(2)."""

    def is_mountpoint(self, path: str) -> bool:
        """Whether ``path`` (not followed if a symlink) is the root of a mount."""

    def is_busy(self, path: str) -> bool:
        """Whether a process uses the mount at ``path`` (cwd, open file),
        asked without unmounting it. False when the kernel cannot tell."""

    def processes_using(self, path: str) -> list[str]:
        """Processes with their root, working directory, an open file or a
        mapped file at or below ``path``, as ``"pid (command)"``. For a mount
        the kernel cannot ask about (one with mounts on it)."""

    def run_mount_program(self, argv: list[str], target: str) -> None:
        """Run a program that mounts ``target`` and returns once it is mounted
        (a FUSE filesystem's daemon, say); raise ``OSError`` if it fails."""

    def fuse_unmount(self, target: str) -> None:
        """Unmount a FUSE mount as its owner may, even without privilege
        (``fusermount3 -u``); raise ``OSError`` (``EBUSY`` if in use)."""

    def copy_tree(self, source: str, target: str) -> None:
        """Copy the contents of directory ``source`` into the empty directory
        ``target`` faithfully: special files recreated, never read."""

    def remove_tree(self, path: str) -> None:
        """Delete ``path`` and everything below it without ever crossing into a
        mount: refuse (``EBUSY``) instead."""


class _Libc:
    """ctypes bindings for the calls the ``os`` module lacks."""

    def __init__(self) -> None:
        # The running interpreter's own symbols include libc's: no need for
        # ctypes.util.find_library, which alone costs several milliseconds
        # of start-up (it imports subprocess and shutil).
        lib = ctypes.CDLL(None, use_errno=True)
        self.mount = lib.mount
        self.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        self.umount2 = lib.umount2
        self.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
        self.syscall = lib.syscall
        self.syscall.restype = ctypes.c_long
        self.syncfs = lib.syncfs
        self.syncfs.argtypes = [ctypes.c_int]
        self.statx = lib.statx
        self.statx.argtypes = [
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_void_p,
        ]


_libc: _Libc | None = None


def _lib() -> _Libc:
    global _libc
    if _libc is None:
        _libc = _Libc()
    return _libc


def _check(result: int, what: str, path: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)


def syncfs(path: str) -> None:
    """syncfs(2): write everything of the filesystem holding ``path`` that is
    still only in memory (data, metadata, journal) to its disk, and wait."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_lib().syncfs(fd), "syncfs", path)
    finally:
        os.close(fd)


def mount_info(path: str | None = None, fd: int | None = None) -> tuple[int, bool]:
    """Return ``(mount id, is the root of its mount)`` of a path or an open fd.

    statx answers both in one call and, unlike ``os.path.ismount``, sees a
    bind mount from the same filesystem.
    """
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if fd is not None:
        res = _lib().statx(fd, b"", _AT_EMPTY_PATH, _STATX_MNT_ID, buf)
        name = f"fd {fd}"
    elif path is not None:
        res = _lib().statx(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_MNT_ID, buf)
        name = path
    else:
        raise TypeError("mount_info() needs a path or an fd")
    _check(res, "statx", name)
    raw = buf.raw
    attributes = int.from_bytes(raw[8:16], "little")
    attributes_mask = int.from_bytes(raw[56:64], "little")
    mnt_id = int.from_bytes(raw[144:152], "little")
    if attributes_mask & _STATX_ATTR_MOUNT_ROOT:
        return mnt_id, bool(attributes & _STATX_ATTR_MOUNT_ROOT)
    if path is None:  # pragma: no cover - kernels before 5.8
        raise OSError(errno.ENOSYS, "statx cannot tell a mount root here")
    parent_id, _ = mount_info(os.path.dirname(os.path.abspath(path)) or "/")
    return mnt_id, mnt_id != parent_id


# The new mount API (Linux 5.2; ``lowerdir+`` of overlay: 6.8). Its syscall
# numbers are the same on every architecture.
_NR_MOVE_MOUNT, _NR_FSOPEN, _NR_FSCONFIG, _NR_FSMOUNT = 429, 430, 431, 432
_FSOPEN_CLOEXEC = 1
_FSCONFIG_SET_FLAG, _FSCONFIG_SET_STRING, _FSCONFIG_SET_FD, _FSCONFIG_CMD_CREATE = 0, 1, 5, 6
_FSCONFIG_STRING_MAX = 255  # the kernel copies at most 256 bytes of a value, its NUL included
_FSMOUNT_CLOEXEC = 1
_MOVE_MOUNT_F_EMPTY_PATH = 4
# fsmount(2)'s MOUNT_ATTR_RDONLY, _NOSUID, _NODEV and _NOEXEC have the values
# of mount(2)'s MS_RDONLY, MS_NOSUID, MS_NODEV and MS_NOEXEC.
_MOUNT_ATTRS = 0x1 | 0x2 | 0x4 | 0x8


def new_mount(fstype: str, options: list[tuple[str, str | None]], target: str, flags: int) -> None:
    """Mount a new ``fstype`` on ``target`` with the new mount API: one
    ``fsconfig`` per option (``(key, value)``, value None for a flag), so
    there is no one-page limit and a key may repeat (overlay's
    ``lowerdir+``); ``flags`` are ``MS_RDONLY``/``MS_NOSUID``/``MS_NODEV``/
    ``MS_NOEXEC``. Raises ``OSError`` naming the option the kernel refused."""
    lib = _lib()
    fs_fd = lib.syscall(_NR_FSOPEN, os.fsencode(fstype), _FSOPEN_CLOEXEC)
    _check(0 if fs_fd >= 0 else -1, "fsopen", target)
    try:
        for key, value in options:
            if value is None:
                res = lib.syscall(_NR_FSCONFIG, fs_fd, _FSCONFIG_SET_FLAG, key.encode(), None, 0)
            elif len(os.fsencode(value)) <= _FSCONFIG_STRING_MAX:
                res = lib.syscall(
                    _NR_FSCONFIG, fs_fd, _FSCONFIG_SET_STRING, key.encode(), os.fsencode(value), 0
                )
            else:
                # A longer path goes as an open directory (overlay takes its
                # layers so since Linux 6.13).
                dir_fd = os.open(value, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    res = lib.syscall(_NR_FSCONFIG, fs_fd, _FSCONFIG_SET_FD, key.encode(), None, dir_fd)
                finally:
                    os.close(dir_fd)
            _check(0 if res == 0 else -1, f"fsconfig {key}", target)
        _check(
            0 if lib.syscall(_NR_FSCONFIG, fs_fd, _FSCONFIG_CMD_CREATE, None, None, 0) == 0 else -1,
            "fsconfig create",
            target,
        )
        mnt_fd = lib.syscall(_NR_FSMOUNT, fs_fd, _FSMOUNT_CLOEXEC, flags & _MOUNT_ATTRS)
        _check(0 if mnt_fd >= 0 else -1, "fsmount", target)
        try:
            res = lib.syscall(
                _NR_MOVE_MOUNT, mnt_fd, b"", _AT_FDCWD, os.fsencode(target), _MOVE_MOUNT_F_EMPTY_PATH
            )
            _check(0 if res == 0 else -1, "move_mount", target)
        finally:
            os.close(mnt_fd)
    finally:
        os.close(fs_fd)


def mount_id_of(path: str) -> int:
    """The mount id of what ``path`` leads to, following symlinks and the
    magic links of ``/proc/PID`` (``root``, ``cwd``, ``fd/N``): mount ids are
    unique across mount namespaces, so this places another process's files."""
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    _check(_lib().statx(_AT_FDCWD, os.fsencode(path), 0, _STATX_MNT_ID, buf), "statx", path)
    return int.from_bytes(buf.raw[144:152], "little")


class LinuxSyscalls:
    """The real thing.

    ``progress``, if given, is called with a ``CopyProgress`` while a
    ``copy_tree`` runs longer than a second, then once more at its end. Nothing
    is ever written to the terminal: displaying it is the caller's business
    (the ``rootfs`` command draws it when its stderr is a terminal).
    """

    progress: ProgressCallback | None = None

    def __init__(self, progress: ProgressCallback | None = None) -> None:
        self.progress = progress

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(path, mode)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(path, mode, follow_symlinks=False)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(path, uid, gid, follow_symlinks=False)

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        _check(
            _lib().mount(
                os.fsencode(source),
                os.fsencode(target),
                os.fsencode(fstype) if fstype else None,
                flags,
                os.fsencode(data) if data else None,
            ),
            "mount",
            target,
        )

    def umount(self, target: str, flags: int) -> None:
        _check(_lib().umount2(os.fsencode(target), flags), "umount", target)

    def mount_fs(self, fstype: str, options: list[tuple[str, str | None]], target: str, flags: int) -> None:
        """``new_mount``: optional in a ``Syscalls`` (the context falls back
        to mount(2) when a caller's object lacks it)."""
        new_mount(fstype, options, target, flags)

    def is_mountpoint(self, path: str) -> bool:
        return mount_info(path)[1]

    def is_busy(self, path: str) -> bool:
        # umount2(MNT_EXPIRE) on an unused mount only marks it "expired"
        # (EAGAIN), and on a used one says EBUSY: the kernel's own busy test,
        # without unmounting. The stat that follows walks through the mount,
        # which clears the mark, so a second MNT_EXPIRE (ours, later) cannot
        # unmount it behind our back.
        result = _lib().umount2(os.fsencode(path), MNT_EXPIRE | UMOUNT_NOFOLLOW)
        err = ctypes.get_errno()
        if result == 0:
            return False  # it had been marked expired already, and is now unmounted
        if err == errno.EAGAIN:
            os.stat(path)
        return err == errno.EBUSY

    def processes_using(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"

        def inside(link: str) -> bool:
            return link == path or link.startswith(prefix)

        users = []
        for pid in (name for name in os.listdir("/proc") if name.isdigit()):
            proc = f"/proc/{pid}"
            try:
                links = [os.readlink(f"{proc}/{name}") for name in ("root", "cwd")]
                links += [os.readlink(f"{proc}/fd/{fd}") for fd in os.listdir(f"{proc}/fd")]
                with open(f"{proc}/maps", encoding="utf-8", errors="surrogateescape") as fh:
                    links += [line.split(maxsplit=5)[-1].rstrip("\n") for line in fh if "/" in line]
                if any(inside(link) for link in links):
                    with open(f"{proc}/comm", encoding="utf-8", errors="replace") as fh:
                        users.append(f"{pid} ({fh.read().strip()})")
            except OSError:
                continue  # gone meanwhile, or not ours to look at
        return users

    def run_mount_program(self, argv: list[str], target: str) -> None:
        import subprocess

        # The program dies with this thread (see dying_with_parent) until it
        # has mounted. A FUSE program such as fuse-overlayfs then forks its
        # daemon, and fork clears the death signal in the child: the daemon
        # outlives both the program and rootfs, as a mounted filesystem must.
        # It inherits no fd of ours (no pass_fds here, ever): a daemon holding
        # an instance's lock would keep it locked for as long as it is mounted.
        proc = subprocess.run(
            dying_with_parent(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace").strip()
            raise OSError(errno.EIO, f"{os.path.basename(argv[0])} failed: {message}", target)

    def fuse_unmount(self, target: str) -> None:
        import shutil
        import subprocess

        program = shutil.which("fusermount3") or shutil.which("fusermount")
        if program is None:
            raise OSError(errno.ENOENT, "neither fusermount3 nor fusermount is installed", target)
        proc = subprocess.run(
            [program, "-u", "--", target],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            check=False,
        )
        if proc.returncode != 0:
            message = proc.stderr.decode(errors="replace").strip()
            code = errno.EBUSY if "busy" in message.lower() else errno.EIO
            raise OSError(code, f"{os.path.basename(program)} -u failed: {message}", target)

    def copy_tree(self, source: str, target: str) -> None:
        # GNU cp -a recreates device nodes, fifos and sockets instead of reading
        # them, and keeps owners, modes, times, hardlinks, xattrs and ACLs;
        # --reflink=auto makes it nearly free on btrfs and xfs. -x stays out of
        # filesystems mounted inside the prototype (a live /proc, say), which
        # the root's non-recursive bind does not show either.
        import subprocess

        # cp dies with this thread (see dying_with_parent): a killed rootfs
        # must not leave it writing into an instance that is being swept. It
        # inherits the fds registered with inherit_fd, so a lock held on the
        # instance stays held until cp itself is gone.
        argv = ["cp", "-a", "-x", "--reflink=auto", "--no-target-directory", "--", source + "/.", target]
        proc = subprocess.Popen(
            dying_with_parent(argv),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            pass_fds=sorted(set(_inherited_fds())),
        )
        try:
            err = _wait_for_copy(proc, source, target, self.progress)
        except BaseException:
            # Interrupted (or the progress callback failed): cp must not go on
            # writing into a target that is about to be deleted.
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip()
            code = errno.ENOSPC if "No space left" in message else errno.EIO
            raise OSError(code, f"cp -a failed: {message}", source)

    def remove_tree(self, path: str) -> None:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            mnt_id, is_root = mount_info(fd=top)
            if is_root:
                raise OSError(errno.EBUSY, "refusing to delete a mount point", path)
            _clear_dir(top, mnt_id, path)
        finally:
            os.close(top)
        os.rmdir(path)


# Directories kept open at once below the top while emptying a tree: enough
# that an ordinary tree never has to find its way back up through "..", far
# below RLIMIT_NOFILE however deep the tree.
_OPEN_LEVELS = 32
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


class _Level:
    """One directory on the way down from the top: its name in its parent,
    the subdirectories still to empty, its fd while it is among the last
    ``_OPEN_LEVELS`` levels, and its identity once that fd is closed."""

    __slots__ = ("fd", "ident", "name", "pending")

    def __init__(self, name: str, fd: int, pending: list[str]) -> None:
        self.name = name
        self.fd = fd
        self.pending = pending
        self.ident: tuple[int, int] | None = None


def _clear_dir(top: int, mnt_id: int, where: str) -> None:
    """Empty the directory open at ``top``, refusing to enter another mount.

    Iterative, so a tree of any depth is emptied (a process in a root may
    make one 100,000 levels deep), and with a bounded number of open fds: the
    last ``_OPEN_LEVELS`` levels stay open, a level above them is closed once
    its ``(st_dev, st_ino)`` is noted, and is met again through ".." of its
    child, which must be that same directory (else the tree was moved under
    us: ``OSError``). Every call is relative to an fd, so paths longer than
    PATH_MAX are no obstacle, and no symlink is ever followed (``O_NOFOLLOW``
    on each level). Only directories cost a statx; files are just unlinked.
    ``top`` is the caller's, never closed here.
    """
    levels = [_Level(where, top, _unlink_files(top))]
    open_below_top = 0
    try:
        while True:
            level = levels[-1]
            if level.pending:
                name = level.pending.pop()
                child = os.open(name, _DIR_FLAGS, dir_fd=level.fd)
                try:
                    child_id, is_root = mount_info(fd=child)
                    if is_root or child_id != mnt_id:
                        raise OSError(
                            errno.EBUSY,
                            "refusing to delete across a mount point",
                            _level_path(levels, name),
                        )
                    pending = _unlink_files(child)
                except BaseException:
                    os.close(child)
                    raise
                levels.append(_Level(name, child, pending))
                open_below_top += 1
                if open_below_top > _OPEN_LEVELS:
                    oldest = levels[len(levels) - open_below_top]
                    st = os.fstat(oldest.fd)
                    oldest.ident = (st.st_dev, st.st_ino)
                    os.close(oldest.fd)
                    oldest.fd = -1
                    open_below_top -= 1
                continue
            # This level is empty: go up to its parent and delete it there.
            if len(levels) == 1:
                return
            parent = levels[-2]
            if parent.fd < 0:
                parent.fd = _open_parent(level.fd, parent, levels)
                open_below_top += 1
            levels.pop()
            os.close(level.fd)
            open_below_top -= 1
            os.rmdir(level.name, dir_fd=parent.fd)
    finally:
        for level in levels[1:]:
            if level.fd >= 0:
                os.close(level.fd)


def _open_parent(fd: int, parent: _Level, levels: list[_Level]) -> int:
    """Open ".." of the directory at ``fd``, which must be ``parent``."""
    up = os.open("..", _DIR_FLAGS, dir_fd=fd)
    st = os.fstat(up)
    if (st.st_dev, st.st_ino) != parent.ident:
        os.close(up)
        raise OSError(errno.ESTALE, "the tree changed while it was being deleted", _level_path(levels, ""))
    return up


def _unlink_files(dir_fd: int) -> list[str]:
    """Unlink everything but the subdirectories in the directory open at
    ``dir_fd``; return the subdirectories' names."""
    with os.scandir(dir_fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    subdirs = []
    for name, is_dir in names:
        if is_dir:
            subdirs.append(name)
        else:
            os.unlink(name, dir_fd=dir_fd)
    return subdirs


def _level_path(levels: list[_Level], name: str) -> str:
    """The path of ``name`` below the deepest level, for error messages
    (shortened in the middle for a very deep tree)."""
    parts = [level.name for level in levels]
    if len(parts) > 12:
        parts = [*parts[:6], f"...({len(parts) - 12} levels)...", *parts[-6:]]
    return os.path.join(*parts, name) if name else os.path.join(*parts)


# The fds the helpers copy_tree starts in this thread inherit (each thread
# its own list: a copy in one thread must not hold another thread's lock).
_inheritance = threading.local()


def _inherited_fds() -> list[int]:
    fds: list[int] | None = getattr(_inheritance, "fds", None)
    if fds is None:
        fds = _inheritance.fds = []
    return fds


def inherit_fd(fd: int) -> None:
    """Let the ``cp`` that ``copy_tree`` starts in this thread, until
    ``release_fd(fd)``, inherit ``fd`` (a lock it must hold while it runs,
    say). Never passed to ``run_mount_program``: a FUSE daemon outlives the
    call, and would hold the fd for as long as it is mounted."""
    _inherited_fds().append(fd)


def release_fd(fd: int) -> None:
    """Undo one ``inherit_fd(fd)`` of this thread (``ValueError`` if none)."""
    _inherited_fds().remove(fd)


@contextlib.contextmanager
def inheriting(fd: int) -> Iterator[int]:
    """``inherit_fd(fd)`` for the duration of a ``with`` block."""
    inherit_fd(fd)
    try:
        yield fd
    finally:
        release_fd(fd)


_UNRESOLVED = ""
_setpriv: str | None = _UNRESOLVED


def dying_with_parent(argv: list[str]) -> list[str]:
    """``argv`` run so that it is SIGKILLed when its parent dies.

    util-linux ``setpriv --pdeathsig KILL`` sets PR_SET_PDEATHSIG and then
    execs ``argv``, which keeps it; subprocess's ``preexec_fn`` could do the
    same in the child, but is unsafe in a threaded program. The "parent" is
    the *thread* that forked: the helper is killed when that thread exits,
    not only the process, so it must be started by a thread that waits for
    it (as copy_tree and run_mount_program do), never one that hands it on
    and ends. The signal survives the exec of ``argv`` (not of a set-uid
    program, which none of ours is). Two gaps: a parent killed between the
    fork and setpriv's prctl leaves the helper running, and without a usable
    setpriv (a missing or a busybox one, found out once per process) ``argv``
    runs as it is. A missing program raises ``FileNotFoundError`` here, as
    subprocess would without setpriv in between.
    """
    global _setpriv
    import shutil

    if _setpriv == _UNRESOLVED:
        import subprocess

        found = shutil.which("setpriv")
        if found is not None:
            try:
                probe = subprocess.run(
                    [found, "--pdeathsig", "KILL", "--", "true"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )
                if probe.returncode != 0:
                    found = None
            except OSError:
                found = None
        _setpriv = found
    if _setpriv is None:
        return argv
    if shutil.which(argv[0]) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), argv[0])
    return [_setpriv, "--pdeathsig", "KILL", "--", *argv]


@dataclasses.dataclass(frozen=True)
class CopyProgress:
    """One sample of a long copy (``copy_tree``), for whoever displays it.

    ``copied`` counts the bytes of the regular files in the target tree so
    far (each hardlinked file once, as ``cp -a`` copies it once), ``total``
    those of the source tree, counted the same way on the source's own
    filesystem (``cp -x`` stays on it too); ``copied`` never exceeds
    ``total``, whatever else writes on the disk. ``done`` marks the last
    report of a copy that ran to its end (successfully or not); a copy that
    was interrupted sends none.
    """

    source: str
    target: str
    copied: int
    total: int
    done: bool = False


# Called with each sample; what it raises stops the copy (cp is killed).
ProgressCallback = Callable[[CopyProgress], None]

# A copy reports nothing during its first second (most copies are over by
# then), then samples the target tree at most every half second, and less
# often when one count of it takes longer (at most a fifth of the time is
# spent counting).
_PROGRESS_AFTER = 1.0
_PROGRESS_EVERY = 0.5


def _wait_for_copy(
    proc: subprocess.Popen[bytes], source: str, target: str, progress: ProgressCallback | None
) -> bytes:
    """Wait for the ``cp`` of ``copy_tree`` and return its stderr, reporting
    progress to ``progress`` (if any) while it runs longer than a second."""
    import subprocess

    if progress is None:
        return proc.communicate()[1]
    try:
        return proc.communicate(timeout=_PROGRESS_AFTER)[1]
    except subprocess.TimeoutExpired:
        pass
    device = os.lstat(source).st_dev
    total = tree_bytes(source, device)
    copied = 0
    while True:
        started = time.monotonic()
        copied = min(total, tree_bytes(target, os.lstat(target).st_dev))
        pause = max(_PROGRESS_EVERY, 4 * (time.monotonic() - started))
        progress(CopyProgress(source, target, copied, total))
        try:
            # communicate (not wait) keeps draining cp's stderr, so a cp with
            # much to say never blocks on a full pipe meanwhile.
            err = proc.communicate(timeout=pause)[1]
            break
        except subprocess.TimeoutExpired:
            continue
    progress(CopyProgress(source, target, total if proc.returncode == 0 else copied, total, done=True))
    return err


def tree_bytes(top: str, device: int) -> int:
    """The bytes of the regular files below ``top`` on filesystem ``device``
    (each inode once). Entries that vanish or cannot be read meanwhile are
    skipped: this is a progress count, not an inventory."""
    seen: set[int] = set()
    size = 0
    pending = [top]
    while pending:
        try:
            entries = os.scandir(pending.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != device:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    pending.append(entry.path)
                elif stat.S_ISREG(st.st_mode) and (st.st_nlink == 1 or st.st_ino not in seen):
                    if st.st_nlink > 1:
                        seen.add(st.st_ino)
                    size += st.st_size
    return size
