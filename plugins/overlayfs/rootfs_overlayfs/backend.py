"""The kernel overlay filesystem as a rootfs backend: only the mount plan.

An instance directory holds ``upper`` and ``work`` (with the ``size`` option,
inside a tmpfs mounted on ``layer``) and ``root``, on which the overlay of the
prototype (the only lower layer) and ``upper`` is mounted. Every directory and
mount goes through the context, so the core journals it and undoes it on
failure or remove; this module never creates, mounts or deletes by itself.
"""

from __future__ import annotations

import errno
import os
import re
import stat

from rootfs_core.context import BuildContext
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.hookspecs import PROBE_PROTOTYPE, BackendInfo, Probe, hookimpl
from rootfs_core.syscalls import MS_RDONLY

PRIORITY = 350  # middle of the kernel-union band: preferred wherever it works
MAX_LAYERS = 500  # the kernel's own limit on lower layers (OVL_MAX_STACK)
# Pinned rather than left to the overlay module's parameters, so that a root
# behaves the same on every host (see README.md for each choice):
# redirect_dir=on  rename(2) of a prototype directory works instead of EXDEV;
# index=on         a prototype hardlink stays one file when written through a name;
# xino=auto        one st_dev and distinct st_ino when upper (a tmpfs) and lower differ.
FEATURES = "redirect_dir=on,index=on,xino=auto"
_SIZE = re.compile(r"([0-9]+)([kmgt]?)", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE_MAX = (1 << 63) - 1  # tmpfs parses size into a 64-bit number


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    """The top of the in-tree priorities (README.md says why) and one option."""
    return BackendInfo(
        PRIORITY,
        "kernel overlay filesystem: the prototype as lower layer under a per-instance upper",
        {"size": "maximum size of the writable layer (64M, 1G, bytes): upper and work on a tmpfs that size"},
        max_layers=MAX_LAYERS,
        read_only=True,
    )


@hookimpl
def rootfs_generate(ctx: BuildContext) -> None:
    """Validate ``size`` first, so a bad value fails before anything is mounted."""
    size = ctx.options.get("size")
    if ctx.read_only and size is not None:
        ctx.fail(ErrorId.ErrBadOption, "size= limits a writable layer, and a read-only view has none")
    if ctx.read_only:
        mount_view(ctx)
    else:
        mount_overlay(ctx, ctx.layers, None if size is None else parse_size(size))


@hookimpl
def rootfs_probe(ctx: BuildContext) -> Probe:
    """Mount exactly what generate mounts, over the core's probe prototype,
    then delete (a whiteout), write and rename a lower directory through it."""
    try:
        mount_overlay(ctx, [ctx.prototype], None)
    except RootFSError as exc:
        return Probe.no(explain(exc, ctx))
    return check_semantics(ctx.root, ctx.prototype)


def parse_size(text: str) -> int:
    """Bytes from ``64M``, ``1g``, ``4096`` (binary multiples, as tmpfs reads them).

    Zero is refused because tmpfs reads ``size=0`` as "unlimited", and a
    percentage because it would be of the host's RAM, not a fixed limit.
    """
    match = _SIZE.fullmatch(text.strip())
    if match is None:
        raise RootFSError(
            ErrorId.ErrBadOption, f"size={text!r} is not a size: use bytes or a number with k, M, G or T"
        )
    size = int(match.group(1)) * _UNITS[match.group(2).lower()]
    if not 0 < size <= _SIZE_MAX:
        raise RootFSError(
            ErrorId.ErrBadOption, f"size={text!r} must be more than 0 and at most {_SIZE_MAX} bytes"
        )
    return size


def escape(path: str) -> str:
    """Overlay splits its options at ``,`` and lowerdir at ``:``; ``\\`` escapes either."""
    return path.replace("\\", "\\\\").replace(",", "\\,").replace(":", "\\:")


def mount_overlay(ctx: BuildContext, layers: list[str], size: int | None) -> None:
    """The whole mount plan of a writable root, shared by generate and the
    probe: ``layers`` (bottom first) under a per-instance upper."""
    layer = "layer/" if size is not None else ""
    upper, work = ctx.path(layer + "upper"), ctx.path(layer + "work")
    if size is not None:
        ctx.mkdir("layer", 0o700)
        ctx.mount(
            "rootfs-layer",
            ctx.path("layer"),
            "tmpfs",
            data=f"size={size},mode=0700",
            error=ErrorId.ErrCreateTempDir,
        )
    # The merged root directory takes its mode and owner from the upper directory.
    top = os.stat(layers[-1])
    ctx.scratch_dir(layer + "upper", stat.S_IMODE(top.st_mode), owner=(top.st_uid, top.st_gid), layer=True)
    ctx.scratch_dir(layer + "work", 0o700)
    mount_layers(ctx, layers, [("upperdir", upper), ("workdir", work)])


def mount_view(ctx: BuildContext) -> None:
    """A read-only view: the layers alone, no upper. Overlay wants two lower
    layers at least without one, so a single layer gets an empty one below."""
    layers = ctx.layers
    if len(layers) == 1:
        layers = [ctx.scratch_dir("empty", 0o755), *layers]
    mount_layers(ctx, layers, [])


def mount_layers(ctx: BuildContext, layers: list[str], dirs: list[tuple[str, str]]) -> None:
    """Mount the overlay of ``layers`` (bottom first; overlay lists them top
    first) with ``dirs`` (upper and work, if any) on the root. A stack whose
    options fit mount(2)'s one page is mounted exactly as a single layer
    always was; a deeper one (hundreds of layers at realistic path lengths)
    goes through the new mount API, one ``lowerdir+`` per layer."""
    lowers = list(reversed(layers))
    data = ",".join(
        [f"lowerdir={':'.join(escape(path) for path in lowers)}"]
        + [f"{key}={escape(path)}" for key, path in dirs]
        + [FEATURES]
    )
    flags = 0 if dirs else MS_RDONLY  # a view: the mount itself read-only, not only the overlay
    if len(os.fsencode(data)) < os.sysconf("SC_PAGE_SIZE"):
        ctx.mount("rootfs-overlayfs", ctx.root, "overlay", flags=flags, data=data)
        return
    options: list[tuple[str, str | None]] = [("source", "rootfs-overlayfs")]
    options += [("lowerdir+", path) for path in lowers] + [(key, path) for key, path in dirs]
    options += [(key, value) for key, _, value in (f.partition("=") for f in FEATURES.split(","))]
    ctx.mount_fs("overlay", options, ctx.root, flags=flags)


def check_semantics(root: str, lower: str) -> Probe:
    """What generate promises: deletes, writes and directory renames work in
    the root and never reach the lower layer."""
    try:
        os.unlink(os.path.join(root, "file"))
        with open(os.path.join(root, "written"), "wb") as fh:
            fh.write(b"upper\n")
        os.rename(os.path.join(root, "dir"), os.path.join(root, "moved"))
        with open(os.path.join(root, "moved", "inner"), "rb") as fh:
            moved = fh.read()
    except OSError as exc:
        hint = " (the kernel ignored redirect_dir=on)" if exc.errno == errno.EXDEV else ""
        return Probe.no(f"the overlay mounted, but changing it failed: {exc}{hint}")
    root_ok = sorted(os.listdir(root)) == ["moved", "written"] and moved == PROBE_PROTOTYPE["dir/inner"]
    lower_ok = sorted(os.listdir(lower)) == ["dir", "file"]
    lower_ok = lower_ok and all(os.path.isfile(os.path.join(lower, name)) for name in PROBE_PROTOTYPE)
    if not (root_ok and lower_ok):
        return Probe.no(
            f"the overlay mounted, but a delete, write and rename showed {sorted(os.listdir(root))} in the "
            f"root and {sorted(os.listdir(lower))} in the lower layer"
        )
    return Probe.ok()


def explain(exc: RootFSError, ctx: BuildContext) -> str:
    """Turn a failed overlay mount into the reason a user can act on."""
    cause = exc.cause
    if exc.error_id is not ErrorId.ErrBindMountRoot or not isinstance(cause, OSError) or cause.errno is None:
        return str(exc)
    if cause.errno == errno.ENODEV:
        why = (
            "this kernel has no overlay filesystem "
            "(CONFIG_OVERLAY_FS off, or the module not loaded: modprobe overlay)"
        )
    elif cause.errno == errno.EPERM:
        why = (
            "no privilege to mount: overlay needs CAP_SYS_ADMIN (run as root; in an unprivileged user "
            "namespace overlay needs the userxattr option, which this backend does not use)"
        )
    elif cause.errno == errno.EINVAL:
        why = (
            f"the kernel refused the layers: either the base directory's filesystem "
            f"({where(ctx)}) cannot hold an upper layer (overlay, NFS and other remote "
            "filesystems cannot; it needs trusted xattrs, whiteouts and d_type), or the kernel predates "
            "redirect_dir, index or xino (Linux 4.17); dmesg says which"
        )
    else:
        why = f"mounting an overlay with its upper layer on {where(ctx)} failed"
    return f"{why} [{errno.errorcode.get(cause.errno, cause.errno)}] ({exc})"


def where(ctx: BuildContext) -> str:
    """``ext4 mounted at /``: where the instance lives, for a reason a person reads."""
    try:
        fstype, mount_point = ctx.filesystem_of(ctx.instance_dir)
    except (OSError, ValueError):
        return "an unknown filesystem"
    return f"{fstype} mounted at {mount_point}"
