"""The physical limit: the same kernel work as a backend, with nothing around it.

Each baseline here does exactly the directories and mounts the backend's plan
makes (same layout, same overlay options, same ``cp -a`` command for the quilt)
but no journal, no record, no lock, no statx checks and no plugin call. What
the library spends above this is its overhead; what this costs is the floor
on this kernel. Written with ctypes directly (not ``rootfs_core.syscalls``)
so that no line of the library is on the baseline's path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import stat
import subprocess
from dataclasses import dataclass, field

from rootfs_core.syscalls import new_mount

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
UMOUNT_NOFOLLOW = 0x8
OVERLAY_FEATURES = "redirect_dir=on,index=on,xino=auto"  # as rootfs_overlayfs.backend pins them
QUILT_DIRS = ("proc", "dev", "etc", "home", "sbin", "var", "tmp")  # the quilt's default list


class _Libc:
    """mount(2) and umount2(2), the two calls ``os`` lacks."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._mount = lib.mount
        self._mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        self._umount2 = lib.umount2
        self._umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

    def mount(
        self, source: bytes, target: bytes, fstype: bytes | None, flags: int, data: bytes | None
    ) -> None:
        if self._mount(source, target, fstype, flags, data) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fsdecode(target))

    def umount(self, target: bytes, flags: int = UMOUNT_NOFOLLOW) -> None:
        if self._umount2(target, flags) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), os.fsdecode(target))


LIBC = _Libc()


class RawOverlay:
    """An overlay root made the shortest way: 4 mkdir, 1 mount; 1 umount, 6 rmdir.

    The layout is the backend's (``<id>/upper``, ``<id>/work``, ``<id>/root``)
    so path lengths and directory sizes match.
    """

    def __init__(self, base_dir: str, prototype: str, *layers: str) -> None:
        self.base_dir = base_dir
        self.prototype = prototype
        self.lowers = [prototype, *layers][::-1]  # overlay lists them top first
        self._mode = stat.S_IMODE(os.stat(self.lowers[0]).st_mode)
        self._serial = 0
        self.api = ""  # which the last generate used: mount(2), or fsconfig past one page

    def generate(self) -> str:
        """Make one root; return its instance directory (the handle for remove)."""
        self._serial += 1
        inst = os.path.join(self.base_dir, f"raw{os.getpid()}-{self._serial}")
        upper, work, root = inst + "/upper", inst + "/work", inst + "/root"
        os.mkdir(inst)
        os.mkdir(upper, self._mode)
        os.mkdir(work, 0o700)
        os.mkdir(root)
        data = f"lowerdir={':'.join(self.lowers)},upperdir={upper},workdir={work},{OVERLAY_FEATURES}"
        if len(data.encode()) < os.sysconf("SC_PAGE_SIZE"):
            self.api = "mount(2)"
            LIBC.mount(b"raw-overlay", os.fsencode(root), b"overlay", 0, data.encode())
        else:
            self.api = "fsconfig"
            options: list[tuple[str, str | None]] = [("source", "raw-overlay")]
            options += [("lowerdir+", lower) for lower in self.lowers]
            options += [("upperdir", upper), ("workdir", work)]
            options += [(k, v) for k, _, v in (f.partition("=") for f in OVERLAY_FEATURES.split(","))]
            new_mount("overlay", options, root, 0)
        return inst

    def remove(self, inst: str) -> None:
        """Unmount, then rmdir only: after umount the work dir holds two empty dirs."""
        LIBC.umount(os.fsencode(inst + "/root"))
        os.rmdir(inst + "/root")
        os.rmdir(inst + "/work/work")
        os.rmdir(inst + "/work/index")
        os.rmdir(inst + "/work")
        os.rmdir(inst + "/upper")
        os.rmdir(inst)


@dataclass
class _QuiltPlan:
    """The quilt's targets for one prototype, resolved once (the backend resolves
    them per instance; that is part of what we measure as its overhead)."""

    relative: list[str] = field(default_factory=list)  # sorted, as the backend mounts them
    empty: set[str] = field(default_factory=set)


class RawQuilt:
    """A quilt made the shortest way: bind + remount-ro of the prototype, then
    for each writable directory ``cp -a --reflink=auto`` (or an empty 1777 dir
    for ``tmp``) bound over it. Removal: umount in reverse, then delete."""

    def __init__(self, base_dir: str, prototype: str, dirs: tuple[str, ...] = QUILT_DIRS) -> None:
        self.base_dir = base_dir
        self.prototype = prototype
        self._serial = 0
        plan = _QuiltPlan()
        real_proto = os.path.realpath(prototype)
        for name in dirs:
            real = os.path.realpath(os.path.join(prototype, name))
            if not os.path.isdir(real) or not real.startswith(real_proto + "/"):
                continue  # the benchmark's prototypes keep these inside; a hostile one is not timed here
            rel = os.path.relpath(real, real_proto)
            if rel not in plan.relative:
                plan.relative.append(rel)
                if name == "tmp":
                    plan.empty.add(rel)
        plan.relative.sort()
        self._plan = plan

    def generate(self) -> str:
        self._serial += 1
        inst = os.path.join(self.base_dir, f"rawq{os.getpid()}-{self._serial}")
        root = inst + "/root"
        os.mkdir(inst)
        os.mkdir(root)
        LIBC.mount(os.fsencode(self.prototype), os.fsencode(root), None, MS_BIND, None)
        LIBC.mount(b"", os.fsencode(root), None, MS_REMOUNT | MS_BIND | MS_RDONLY, None)
        os.mkdir(inst + "/rw", 0o700)
        for index, rel in enumerate(self._plan.relative):
            copy = f"{inst}/rw/{index}"
            if rel in self._plan.empty:
                os.mkdir(copy)
                os.chmod(copy, 0o1777)
            else:
                os.mkdir(copy)
                subprocess.run(
                    [
                        "cp",
                        "-a",
                        "--reflink=auto",
                        "--no-target-directory",
                        "--",
                        f"{self.prototype}/{rel}/.",
                        copy,
                    ],
                    check=True,
                    stdin=subprocess.DEVNULL,
                )
            LIBC.mount(os.fsencode(copy), os.fsencode(f"{root}/{rel}"), None, MS_BIND, None)
        return inst

    def remove(self, inst: str) -> None:
        root = inst + "/root"
        for rel in reversed(self._plan.relative):
            LIBC.umount(os.fsencode(f"{root}/{rel}"))
        LIBC.umount(os.fsencode(root))
        os.rmdir(root)
        shutil.rmtree(inst + "/rw")  # nothing is mounted below any more: the umounts above succeeded
        os.rmdir(inst)
