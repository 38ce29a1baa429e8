"""The aufs backend: one ``mount -t aufs`` of a per-instance writable branch
over the prototype, as garden's ``setup_fs`` did.

The plan is three steps, all through the context so the core journals and
undoes them: the writable branch, a private directory for aufs's xino file,
and the mount. Everything else is checked before the first step, so a
refusal leaves nothing to undo. Why each option is what it is: README.md.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess

from rootfs_core.context import BuildContext
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.hookspecs import BackendInfo, Probe, hookimpl

RW = "rw"  # the writable branch, inside the instance
XINO_DIR = "xino"  # where aufs keeps its (unlinked) inode tables, inside the instance
UDBA = "reval"  # see README.md: cheap, and still notices a prototype changed behind aufs
_FORBIDDEN = ",:="  # separators of aufs's branch syntax; a path cannot contain them
NO_AUFS = "no aufs filesystem in this kernel"
_UNIONS = {"aufs": "aufs", "overlay": "overlayfs"}  # filesystem type -> name in messages


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    """Priority 250, the middle of the other-union band: below overlayfs (mainline
    and maintained), above the quilt (a union copies nothing)."""
    return BackendInfo(priority=250, summary="aufs union: a writable branch over the read-only prototype")


@hookimpl
def rootfs_probe(ctx: BuildContext) -> Probe:
    """Name the missing kernel support if that is the reason; otherwise mount
    for real in the throw-away instance and use it."""
    verdict = kernel_support()
    if not verdict.supported:
        return verdict
    mount_union(ctx)
    return try_union(ctx)


@hookimpl
def rootfs_generate(ctx: BuildContext) -> None:
    """The same plan the probe tried; remove is the journal undone (unmount,
    confirm, delete), so there is no ``rootfs_remove``."""
    mount_union(ctx)


def mount_union(ctx: BuildContext) -> None:
    """Mount the writable branch over ``ctx.prototype`` on ``ctx.root``."""
    _refuse_union_below(ctx)
    data = aufs_options(ctx.path(RW), ctx.prototype, ctx.path(XINO_DIR))
    # The union's root directory is the writable branch's: give it the prototype's mode.
    ctx.scratch_dir(RW, mode=os.stat(ctx.prototype).st_mode & 0o7777)
    ctx.scratch_dir(XINO_DIR, mode=0o700)
    ctx.mount("none", ctx.root, "aufs", data=data)


def aufs_options(rw: str, prototype: str, xino_dir: str) -> str:
    """The mount data. Refused as the root mount (``ErrBindMountRoot``) where
    aufs would fail obscurely: a separator inside a path. (Data longer than
    mount(2)'s one page is refused by the core's ``ctx.mount``.)"""
    for path in (rw, prototype, xino_dir):
        bad = sorted(set(_FORBIDDEN) & set(path))
        if bad:
            raise RootFSError(
                ErrorId.ErrBindMountRoot,
                f"aufs cannot use the path {path!r}: it contains {' '.join(bad)}, which aufs's "
                f"branch syntax reserves; use paths without {' '.join(_FORBIDDEN)}",
            )
    return f"br:{rw}=rw:{prototype}=ro+wh,xino={xino_dir}/.aufs.xino,udba={UDBA}"


def _refuse_union_below(ctx: BuildContext) -> None:
    """The writable branch (and the xino file) will live in the instance
    directory; aufs cannot stack them on another union."""
    try:
        kind = _UNIONS.get(ctx.filesystem_of(ctx.instance_dir)[0])
    except OSError as exc:
        ctx.fail(ErrorId.ErrBackendUnsupported, f"cannot tell the filesystem of {ctx.instance_dir}: {exc}")
    if kind is not None:
        ctx.fail(
            ErrorId.ErrBackendUnsupported,
            f"the base directory is on {kind}, and aufs cannot keep its writable branch on {kind}; "
            f"put the base directory on a plain filesystem (ext4, xfs, btrfs, tmpfs)",
        )


def kernel_support() -> Probe:
    """Whether this kernel has aufs at all, loading the module if it can.

    Only a "no" is final: a "yes" still needs the real test mount (the
    filesystem may exist yet be refused, in a user namespace say).
    """
    if _aufs_registered():
        return Probe.ok()
    # No modprobe, no permission, no module: all fine, the second look decides.
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        subprocess.run(
            ["modprobe", "-q", "aufs"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=30,
            check=False,
        )
    if _aufs_registered():
        return Probe.ok()
    return Probe.no(f"{NO_AUFS} ({platform.release()}); aufs is not in mainline Linux")


def _aufs_registered() -> bool:
    try:
        with open("/proc/filesystems", encoding="ascii", errors="replace") as fh:
            return any(line.split()[-1:] == ["aufs"] for line in fh)
    except OSError:
        return False


def try_union(ctx: BuildContext) -> Probe:
    """Write, delete a file and a directory of the prototype through the
    mounted union, and check the results are where aufs should put them.

    The probe's prototype (made by the core) holds ``file`` and ``dir/inner``.
    """
    root, rw = ctx.root, ctx.path(RW)
    try:
        with open(os.path.join(root, "written"), "wb") as fh:
            fh.write(b"upper\n")
        os.unlink(os.path.join(root, "file"))
        os.unlink(os.path.join(root, "dir", "inner"))
        os.rmdir(os.path.join(root, "dir"))
        seen = sorted(os.listdir(root))
    except OSError as exc:
        return Probe.no(f"aufs mounted, but writing or deleting through it failed: {exc}")
    checks = {
        "the union shows exactly what is left": seen == ["written"],
        "the new file is in the writable branch": os.path.isfile(os.path.join(rw, "written")),
        "deleted names are whited out in the writable branch": all(
            os.path.lexists(os.path.join(rw, f".wh.{name}")) for name in ("file", "dir")
        ),
        "the prototype is untouched": os.path.isfile(os.path.join(ctx.prototype, "dir", "inner")),
    }
    failed = [what for what, ok in checks.items() if not ok]
    if failed:
        return Probe.no(f"aufs mounted, but not as a union should: not true that {'; '.join(failed)}")
    return Probe.ok()
