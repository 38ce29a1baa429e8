"""Syscalls that fail on purpose, or that only pretend to mount.

``FaultySyscalls`` wraps a real implementation, records every call, and makes
the N-th state-changing call fail: run an operation once to count its calls,
then once per call with that one failing, and check nothing is left each time.
``FakeMounts`` keeps directories real but pretends mount(2) and umount2(2)
succeed, answering ``is_mountpoint`` from its own table: for a filesystem this
kernel lacks (aufs), it shows the exact calls a backend makes.
"""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Collection

from rootfs_core.core import RootFS
from rootfs_core.registry import Registry
from rootfs_core.syscalls import (
    MS_BIND,
    MS_PRIVATE,
    MS_SHARED,
    MS_SLAVE,
    MS_UNBINDABLE,
    LinuxSyscalls,
    Syscalls,
)

PROPAGATION = MS_PRIVATE | MS_SHARED | MS_SLAVE | MS_UNBINDABLE


@dataclasses.dataclass(frozen=True)
class Call:
    name: str
    args: tuple[object, ...]


class FaultySyscalls:
    """Delegates to ``inner``; the changing calls whose 1-based numbers are in
    ``fail_on`` raise ``OSError(error)`` instead. ``calls`` lists the changing
    calls made; clear it (after a probe, say) to count from there."""

    def __init__(
        self, inner: Syscalls | None = None, fail_on: Collection[int] = (), error: int = errno.EIO
    ) -> None:
        self.inner = inner if inner is not None else LinuxSyscalls()
        self.fail_on = set(fail_on)
        self.error = error
        self.calls: list[Call] = []

    def _call(self, name: str, *args: object) -> None:
        self.calls.append(Call(name, args))
        if len(self.calls) in self.fail_on:
            raise OSError(self.error, f"injected failure of call {len(self.calls)} ({name})")

    def mkdir(self, path: str, mode: int) -> None:
        self._call("mkdir", path, mode)
        self.inner.mkdir(path, mode)

    def rmdir(self, path: str) -> None:
        self._call("rmdir", path)
        self.inner.rmdir(path)

    def chmod(self, path: str, mode: int) -> None:
        self._call("chmod", path, mode)
        self.inner.chmod(path, mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        self._call("chown", path, uid, gid)
        self.inner.chown(path, uid, gid)

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        self._call("mount", source, target, fstype, flags, data)
        self.inner.mount(source, target, fstype, flags, data)

    def umount(self, target: str, flags: int) -> None:
        self._call("umount", target, flags)
        self.inner.umount(target, flags)

    def run_mount_program(self, argv: list[str], target: str) -> None:
        self._call("run_mount_program", list(argv), target)
        self.inner.run_mount_program(argv, target)

    def mount_fs(self, fstype: str, options: list[tuple[str, str | None]], target: str, flags: int) -> None:
        """The new mount API, where the wrapped syscalls have it."""
        self._call("mount_fs", fstype, list(options), target, flags)
        new_api = getattr(self.inner, "mount_fs", None)
        if new_api is None:
            raise OSError(errno.ENOSYS, "the wrapped syscalls have no mount_fs", target)
        new_api(fstype, options, target, flags)

    def fuse_unmount(self, target: str) -> None:
        self._call("fuse_unmount", target)
        self.inner.fuse_unmount(target)

    def copy_tree(self, source: str, target: str) -> None:
        self._call("copy_tree", source, target)
        self.inner.copy_tree(source, target)

    def remove_tree(self, path: str) -> None:
        self._call("remove_tree", path)
        self.inner.remove_tree(path)

    def is_mountpoint(self, path: str) -> bool:
        return self.inner.is_mountpoint(path)

    def is_busy(self, path: str) -> bool:
        return self.inner.is_busy(path)

    def processes_using(self, path: str) -> list[str]:
        return self.inner.processes_using(path)


def probed_rootfs(
    base_dir: str, backend: str, *, inner: Syscalls | None = None, registry: Registry | None = None
) -> tuple[RootFS, FaultySyscalls]:
    """A RootFS on ``FaultySyscalls`` with ``backend`` forced and probed
    already, so ``calls`` counts from the next operation on: the usual start
    of a fault-injection test (count a clean run, then fail each call)."""
    faulty = FaultySyscalls(inner)
    rfs = RootFS(base_dir, backend=backend, syscalls=faulty, registry=registry)
    probe = rfs.probe(backend)
    assert probe.supported, f"{backend} is not supported here: {probe.reason}"
    faulty.calls.clear()
    return rfs, faulty


class FakeMounts(LinuxSyscalls):
    """Real directories, copies and bind mounts; other mounts only recorded.

    Filesystems this kernel may lack (aufs, overlay, a FUSE program) are
    simulated: ``mount_calls`` shows exactly what was asked, ``mounted`` what
    is "mounted" now, and ``is_mountpoint`` answers from it. Bind mounts are
    made for real, since every Linux has them and a backend may look through
    one (the quilt reads its own read-only bind).
    """

    def __init__(self) -> None:
        self.mounted: list[str] = []  # simulated mount points, in mount order
        self.mount_calls: list[tuple[str, str, str, int, str]] = []
        self.propagation_calls: list[tuple[str, int]] = []  # (target, MS_PRIVATE ...)
        self.umount_calls: list[str] = []

    def mount(self, source: str, target: str, fstype: str, flags: int, data: str) -> None:
        if flags & PROPAGATION:
            # A change of propagation is no new mount: made for real on a
            # real mount, only recorded on a simulated one.
            self.propagation_calls.append((target, flags))
            if os.path.normpath(target) not in self.mounted:
                super().mount(source, target, fstype, flags, data)
            return
        self.mount_calls.append((source, target, fstype, flags, data))
        if flags & MS_BIND:
            super().mount(source, target, fstype, flags, data)
            return
        if not os.path.isdir(target):
            raise OSError(errno.ENOENT, "mount target missing", target)
        target = os.path.normpath(target)
        if target not in self.mounted:
            self.mounted.append(target)

    def umount(self, target: str, flags: int) -> None:
        target = os.path.normpath(target)
        self.umount_calls.append(target)
        if target not in self.mounted:
            super().umount(target, flags)
            return
        self.mounted.remove(target)

    def run_mount_program(self, argv: list[str], target: str) -> None:
        self.mount(argv[0], target, "fuse", 0, " ".join(argv[1:]))

    def mount_fs(self, fstype: str, options: list[tuple[str, str | None]], target: str, flags: int) -> None:
        """Simulated like ``mount``: the options as one string, comma-joined."""
        joined = ",".join(key if value is None else f"{key}={value}" for key, value in options)
        self.mount(fstype, target, fstype, flags, joined)

    def fuse_unmount(self, target: str) -> None:
        self.umount(target, 0)

    def is_mountpoint(self, path: str) -> bool:
        return os.path.normpath(path) in self.mounted or super().is_mountpoint(path)

    def is_busy(self, path: str) -> bool:
        return os.path.normpath(path) not in self.mounted and super().is_busy(path)

    def rmdir(self, path: str) -> None:
        if os.path.normpath(path) in self.mounted:
            raise OSError(errno.EBUSY, "mount point busy", path)
        super().rmdir(path)
