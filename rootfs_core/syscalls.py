"""The kernel calls rootfs makes, behind one replaceable object.

Like the seed's ``SyscallFS``, every call that changes the host goes through a
``Syscalls`` object. Production code uses ``LinuxSyscalls``; tests wrap it to
make any single call fail (``rootfs_core.testing.faults``) or replace the
mount calls for a filesystem this kernel lacks (aufs). Nothing else in rootfs
mounts, unmounts, creates or deletes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import subprocess

# mount(2) flags (linux/mount.h)
MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
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


def mount_info(path: str | None = None, fd: int | None = None) -> tuple[int, bool]:
    """Return ``(mount id, is the root of its mount)`` of a path or an open fd.

    statx answers both in one call and, unlike ``os.path.ismount``, sees a
    bind mount from the same filesystem.
    """
    buf = ctypes.create_string_buffer(_STATX_SIZE)
    if fd is not None:
        res = _lib().statx(fd, b"", _AT_EMPTY_PATH, _STATX_MNT_ID, buf)
        name = f"fd {fd}"
    else:
        assert path is not None
        res = _lib().statx(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_MNT_ID, buf)
        name = path
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


class LinuxSyscalls:
    """The real thing."""

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

        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False
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

        argv = ["cp", "-a", "-x", "--reflink=auto", "--no-target-directory", "--", source + "/.", target]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if sys.stderr.isatty():
            _show_progress(proc, source, target)
        _, err = proc.communicate()
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


def _clear_dir(dir_fd: int, mnt_id: int, where: str) -> None:
    """Empty the directory open at ``dir_fd``, refusing to enter another mount."""
    with os.scandir(dir_fd) as entries:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in entries]
    for name, is_dir in names:
        if not is_dir:
            os.unlink(name, dir_fd=dir_fd)
            continue
        child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
        try:
            child_id, is_root = mount_info(fd=child)
            if is_root or child_id != mnt_id:
                raise OSError(
                    errno.EBUSY, "refusing to delete across a mount point", os.path.join(where, name)
                )
            _clear_dir(child, mnt_id, os.path.join(where, name))
        finally:
            os.close(child)
        os.rmdir(name, dir_fd=dir_fd)


def _show_progress(proc: subprocess.Popen[bytes], source: str, target: str) -> None:
    """For a person watching a long copy: bytes copied so far, on one line.

    Silent for copies that finish within a second. The amount copied is read
    from the target filesystem's free space, which costs nothing per file
    (and is only approximate when something else writes there too).
    """
    import subprocess

    try:
        proc.wait(timeout=1.0)
        return
    except subprocess.TimeoutExpired:
        pass
    total = sum(os.lstat(os.path.join(d, f)).st_size for d, _, files in os.walk(source) for f in files)
    st = os.statvfs(target)
    free_before = st.f_bavail * st.f_frsize
    name = os.path.basename(source.rstrip("/")) or source
    while True:
        try:
            proc.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            st = os.statvfs(target)
            done = max(0, free_before - st.f_bavail * st.f_frsize)
            percent = min(100, done * 100 // total) if total else 100
            sys.stderr.write(f"\rrootfs: copying {name}: {done >> 20} of {total >> 20} MiB ({percent}%)")
            sys.stderr.flush()
    sys.stderr.write("\r\033[K")
    sys.stderr.flush()
