"""fuse-overlayfs as a rootfs backend: the overlay layout, served by a FUSE daemon.

An instance directory holds ``upper`` and ``work`` and ``root``, on which the
``fuse-overlayfs`` program mounts the layers (``ctx.layers``: the prototype,
then any layers over it) under ``upper``. A read-only view has neither upper
nor work: the layers alone, mounted ``ro``. Unlike the kernel overlay, a FUSE
mount needs no privilege: libfuse mounts through the set-uid ``fusermount3``
when mount(2) is refused, so a user with a base directory of their own can
generate and remove roots.

Layers are read as the kernel overlay reads them: a 0/0 character device is
a whiteout, a directory with ``trusted.overlay.opaque=y`` is opaque. Reading
a ``trusted.*`` attribute takes CAP_SYS_ADMIN in the initial user namespace,
which the daemon has only when root runs it; without it an opaque directory
would silently show what lies below, so a stack of several layers is then
refused (``ErrUnsupportedRequest``) rather than shown wrong.

The mount keeps the protections of the prototype's mount (``nosuid``,
``nodev``, ``noexec``: ``ctx.mount_options``), passed to libfuse with ``-o``,
so a root never grants more than the prototype itself does.

The mount is one journaled ``fuse_mount`` step, after which the core
journals the daemon serving it by pid and start time. The core undoes both:
on failure or remove it unmounts with ``fusermount3 -u``, waits for exactly
that daemon to exit, and only then deletes ``upper`` and ``work``. So this
backend has no ``rootfs_remove`` hook.
"""

from __future__ import annotations

import errno
import os
import resource
import shutil
import stat

from rootfs_core.context import BuildContext
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.hookspecs import PROBE_PROTOTYPE, BackendInfo, Probe, hookimpl

PROGRAM = "fuse-overlayfs"
# The deepest stack served: the kernel overlay's own limit, and what the
# tests mount (at 100-character layer paths). fuse-overlayfs itself has no
# fixed limit; what bounds it is below (one argument, one descriptor per layer).
MAX_LAYERS = 500
# The longest single argument execve(2) accepts (MAX_ARG_STRLEN, 32 pages):
# every option, the whole layer list included, travels in one ``-o``.
MAX_ARGUMENT = 32 * 4096
# The daemon keeps one descriptor open per layer for its whole life, and needs
# more for the files opened through the root; it inherits our RLIMIT_NOFILE.
SPARE_DESCRIPTORS = 64
CAP_SYS_ADMIN = 21
# The other-union band, below the kernel overlay (350) and aufs (250): where a
# kernel union works (as root) it is faster and is chosen; where it does not
# (without privilege) this one is, with no configuration.
PRIORITY = 220
FUSE_DEVICE = "/dev/fuse"


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    return BackendInfo(
        PRIORITY,
        "fuse-overlayfs: an overlay served by a FUSE daemon, usable without privilege",
        max_layers=MAX_LAYERS,
        read_only=True,
    )


@hookimpl
def rootfs_generate(ctx: BuildContext) -> None:
    mount_overlay(ctx, ctx.layers, read_only=ctx.read_only)


@hookimpl
def rootfs_probe(ctx: BuildContext) -> Probe:
    """Check what FUSE needs, then mount exactly what generate mounts over the
    core's probe prototype and delete, write and read through it."""
    missing = missing_requirement()
    if missing is not None:
        return Probe.no(missing)
    try:
        mount_overlay(ctx, [ctx.prototype], read_only=False)
    except RootFSError as exc:
        return Probe.no(
            f"{PROGRAM} could not mount an overlay with its upper layer in {ctx.instance_dir}: {exc}"
        )
    return check_semantics(ctx.root, ctx.prototype)


def missing_requirement() -> str | None:
    """Why FUSE cannot work for this user here, in words they can act on, or None.

    Checked before mounting because libfuse's own messages name the symptom
    (``Permission denied``), not the host setting behind it.
    """
    if shutil.which(PROGRAM) is None:
        return f"the {PROGRAM} program is not installed (Debian, Ubuntu: apt-get install fuse-overlayfs)"
    try:
        os.close(os.open(FUSE_DEVICE, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        return _device_problem(exc)
    if os.geteuid() != 0:
        helper = shutil.which("fusermount3")
        if helper is None:
            return (
                "fusermount3 is not installed (apt-get install fuse3): without privilege, FUSE mounts go "
                "through it"
            )
        st = os.stat(helper)
        if not (st.st_mode & stat.S_ISUID and st.st_uid == 0):
            return (
                f"{helper} is not set-uid root, so it cannot mount for uid {os.geteuid()} "
                f"(chmod u+s {helper})"
            )
    return None


def _device_problem(exc: OSError) -> str:
    code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
    if exc.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return (
            f"{FUSE_DEVICE} is missing or has no driver [{code}]: the kernel lacks FUSE (modprobe fuse), "
            f"or this container was started without the device (docker/podman: --device {FUSE_DEVICE})"
        )
    if exc.errno == errno.EACCES:
        try:
            st = os.stat(FUSE_DEVICE)
            mode = f"mode {stat.S_IMODE(st.st_mode):04o}, owner uid {st.st_uid}"
        except OSError:
            mode = "mode unknown"
        return (
            f"uid {os.geteuid()} may not open {FUSE_DEVICE} ({mode}) [{code}]: FUSE is reserved to its "
            "owner on this host, and fusermount3 respects that (it opens the device with the caller's "
            f"rights); an administrator allows every user with `chmod 0666 {FUSE_DEVICE}` (the usual mode, "
            f"which udev sets on most distributions) or some users with an ACL "
            f"(`setfacl -m u:NAME:rw {FUSE_DEVICE}`)"
        )
    return f"cannot open {FUSE_DEVICE} [{code}]: a device cgroup or security policy forbids it ({exc})"


def escape(path: str) -> str:
    """libfuse splits ``-o`` at ``,`` and reads ``\\`` as an escape for the next character."""
    return path.replace("\\", "\\\\").replace(",", "\\,")


def mount_overlay(ctx: BuildContext, layers: list[str], *, read_only: bool) -> None:
    """The whole mount plan, shared by generate and the probe: ``layers``
    (bottom first; fuse-overlayfs lists them top first) under a per-instance
    upper, or alone and read-only. Everything that can refuse the request is
    checked before the first directory is made."""
    upper, work = ctx.path("upper"), ctx.path("work")
    named = [("prototype" if n == 0 else "layer", layer) for n, layer in enumerate(layers)]
    if not read_only:
        named.append(("base directory", ctx.instance_dir))
    for what, path in named:
        if ":" in path:
            ctx.fail(
                ErrorId.ErrBindMountRoot,
                f"the {what} path {path!r} contains ':', which {PROGRAM} reads as a separator between "
                "layers and cannot escape: use a path without ':'",
            )
    if len(layers) > 1 and not reads_trusted_xattrs():
        ctx.fail(
            ErrorId.ErrUnsupportedRequest,
            f"without privilege {PROGRAM} cannot read trusted.overlay.opaque, so the opaque directories "
            f"of a stack of {len(layers)} layers would show what lies below them: stack layers as root, "
            "or flatten them into one prototype",
        )
    options = [f"lowerdir={':'.join(escape(layer) for layer in reversed(layers))}"]
    options += ["ro"] if read_only else [f"upperdir={escape(upper)}", f"workdir={escape(work)}"]
    # The prototype's protections, which libfuse applies as mount flags (as
    # root it would otherwise allow set-id programs; fusermount3 adds nosuid
    # and nodev without privilege, but not noexec).
    options += ctx.mount_options
    if os.geteuid() != 0:
        # Without privilege a copy-up cannot keep a file's owner (chown is
        # refused), and the kernel would judge access by owners the user is
        # not: every file shows as the user's, so the whole root is writable.
        options += [f"squash_to_uid={os.geteuid()}", f"squash_to_gid={os.getegid()}"]
    argument = ",".join(options)
    if len(os.fsencode(argument)) >= MAX_ARGUMENT:
        ctx.fail(
            ErrorId.ErrUnsupportedRequest,
            f"the paths of {len(layers)} layers make a {len(os.fsencode(argument))}-byte option, and "
            f"{PROGRAM} takes them in one argument of at most {MAX_ARGUMENT - 1} bytes: use fewer layers "
            "or shorter paths",
        )
    descriptors = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if descriptors != resource.RLIM_INFINITY and len(layers) + SPARE_DESCRIPTORS > descriptors:
        ctx.fail(
            ErrorId.ErrUnsupportedRequest,
            f"{PROGRAM} keeps a descriptor open per layer, and {len(layers)} layers with "
            f"{SPARE_DESCRIPTORS} to spare exceed this process's limit of {descriptors} open files "
            "(raise it: ulimit -n)",
        )
    if not read_only:
        # The merged root directory takes its mode and owner from the upper
        # directory (an owner only root may give; without privilege all is
        # squashed), as the top layer's root would show them.
        top = os.stat(layers[-1])
        owner = (top.st_uid, top.st_gid) if os.geteuid() == 0 else None
        ctx.scratch_dir("upper", stat.S_IMODE(top.st_mode), owner=owner, layer=True)
        ctx.scratch_dir("work", 0o700)
    ctx.fuse_mount([PROGRAM, "-o", argument, ctx.root], ctx.root)


def reads_trusted_xattrs() -> bool:
    """Whether a daemon we start can read ``trusted.*`` attributes: it needs
    CAP_SYS_ADMIN in the initial user namespace (in a user namespace of its
    own, even its root is refused, silently: the attributes seem absent)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            caps = next(int(line.split()[1], 16) for line in fh if line.startswith("CapEff:"))
        with open("/proc/self/uid_map", encoding="ascii") as fh:
            initial = fh.read().split() == ["0", "0", "4294967295"]
    except (OSError, StopIteration, ValueError):
        return False
    return initial and bool(caps & (1 << CAP_SYS_ADMIN))


def check_semantics(root: str, lower: str) -> Probe:
    """What generate promises: a delete (a whiteout) and a write (a copy-up of
    a lower directory) work in the root and never reach the lower layer."""
    try:
        os.unlink(os.path.join(root, "file"))
        with open(os.path.join(root, "dir", "written"), "wb") as fh:
            fh.write(b"upper\n")
        with open(os.path.join(root, "dir", "written"), "rb") as fh:
            written = fh.read()
    except OSError as exc:
        return Probe.no(f"the overlay mounted, but changing it failed: {exc}")
    root_ok = os.listdir(root) == ["dir"] and written == b"upper\n"
    lower_ok = not os.path.exists(os.path.join(lower, "dir", "written"))
    for name, content in PROBE_PROTOTYPE.items():
        with open(os.path.join(lower, name), "rb") as fh:
            lower_ok = lower_ok and fh.read() == content
    if not (root_ok and lower_ok):
        return Probe.no(
            f"the overlay mounted, but a delete and a write showed {sorted(os.listdir(root))} in the root "
            f"and {sorted(os.listdir(lower))} in the lower layer"
        )
    return Probe.ok()
