"""fuse-overlayfs as a rootfs backend: the overlay layout, served by a FUSE daemon.

An instance directory holds ``upper`` and ``work`` and ``root``, on which the
``fuse-overlayfs`` program mounts the prototype (the only lower layer) under
``upper``. Unlike the kernel overlay, a FUSE mount needs no privilege: libfuse
mounts through the set-uid ``fusermount3`` when mount(2) is refused, so a user
with a base directory of their own can generate and remove roots.

The mount is one journaled ``fuse_mount`` step, so the core unmounts it with
``fusermount3 -u`` on failure or remove. What the journal cannot see is the
daemon behind the mount: ``rootfs_remove`` unmounts first and waits for that
process to exit, so no daemon outlives its root and none is still writing in
``upper`` or ``work`` when the core deletes them.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time

from rootfs_core.context import BuildContext, RemoveContext
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.hookspecs import PROBE_PROTOTYPE, BackendInfo, Probe, hookimpl

PROGRAM = "fuse-overlayfs"
# The other-union band, below the kernel overlay (350) and aufs (250): where a
# kernel union works (as root) it is faster and is chosen; where it does not
# (without privilege) this one is, with no configuration.
PRIORITY = 220
FUSE_DEVICE = "/dev/fuse"
DAEMON_EXIT_TIMEOUT = 5.0  # seconds a daemon may take to exit once unmounted


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    return BackendInfo(
        PRIORITY,
        "fuse-overlayfs: an overlay served by a FUSE daemon, usable without privilege",
    )


@hookimpl
def rootfs_generate(ctx: BuildContext) -> None:
    mount_overlay(ctx, ctx.prototype)


@hookimpl
def rootfs_probe(ctx: BuildContext) -> Probe:
    """Check what FUSE needs, then mount exactly what generate mounts over the
    core's probe prototype and delete, write and read through it."""
    missing = missing_requirement()
    if missing is not None:
        return Probe.no(missing)
    try:
        mount_overlay(ctx, ctx.prototype)
    except RootFSError as exc:
        return Probe.no(
            f"{PROGRAM} could not mount an overlay with its upper layer in {ctx.instance_dir}: {exc}"
        )
    return check_semantics(ctx.root, ctx.prototype)


@hookimpl
def rootfs_remove(ctx: RemoveContext) -> None:
    """Unmount the root and wait for its daemon to exit, before the core
    deletes ``upper`` and ``work`` (which finds the root already unmounted)."""
    daemons = daemons_serving(ctx.root)
    ctx.unmount(ctx.root)
    wait_for_exit(daemons, ctx.root)


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


def mount_overlay(ctx: BuildContext, lower: str) -> None:
    """The whole mount plan, shared by generate and the probe."""
    for what, path in (("prototype", lower), ("base directory", ctx.instance_dir)):
        if ":" in path:
            ctx.fail(
                ErrorId.ErrBindMountRoot,
                f"the {what} path {path!r} contains ':', which {PROGRAM} reads as a separator between "
                "layers and cannot escape: use a path without ':'",
            )
    # The merged root directory takes its mode and owner from the upper
    # directory (an owner only root may give; without privilege all is squashed).
    top = os.stat(lower)
    owner = (top.st_uid, top.st_gid) if os.geteuid() == 0 else None
    upper = ctx.scratch_dir("upper", stat.S_IMODE(top.st_mode), owner=owner)
    work = ctx.scratch_dir("work", 0o700)
    options = [f"lowerdir={escape(lower)}", f"upperdir={escape(upper)}", f"workdir={escape(work)}"]
    if os.geteuid() != 0:
        # Without privilege a copy-up cannot keep a file's owner (chown is
        # refused), and the kernel would judge access by owners the user is
        # not: every file shows as the user's, so the whole root is writable.
        options += [f"squash_to_uid={os.geteuid()}", f"squash_to_gid={os.getegid()}"]
    ctx.fuse_mount([PROGRAM, "-o", ",".join(options), ctx.root], ctx.root)


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


def daemons_serving(root: str) -> list[int]:
    """The pids of the fuse-overlayfs processes whose mount point is ``root``.

    A daemon is known by its command line, which ends with the mount point
    generate gave it; an exited one (a zombie) has none and is not counted.
    """
    return [int(name) for name in os.listdir("/proc") if name.isdigit() and _serves(int(name), root)]


def _serves(pid: int, root: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")[:-1]
    except OSError:  # gone, or not ours to read
        return False
    return len(argv) >= 2 and os.path.basename(argv[0]) == PROGRAM.encode() and argv[-1] == os.fsencode(root)


def wait_for_exit(pids: list[int], root: str) -> None:
    """Wait until none of ``pids`` serves ``root`` any more; fail with the pids
    after ``DAEMON_EXIT_TIMEOUT`` so a stuck daemon is never silently leaked."""
    deadline = time.monotonic() + DAEMON_EXIT_TIMEOUT
    pause = 0.002
    while True:
        alive = [pid for pid in pids if _serves(pid, root)]
        if not alive:
            return
        if time.monotonic() >= deadline:
            listed = " ".join(map(str, alive))
            raise RootFSError(
                ErrorId.ErrUnmountRoot,
                f"{PROGRAM} (pid {listed}) serving {root} is still running {DAEMON_EXIT_TIMEOUT:g}s after it "
                f"was unmounted; stop it (kill {listed}) and remove again",
            )
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
