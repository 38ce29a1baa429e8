"""The primitives a backend builds an instance with.

Every primitive that changes the host first appends a ``Step`` to the
instance's journal (written to disk), then acts. So whatever fails, and even
if the process is killed between the two, the journal names everything that
may exist, and ``teardown.undo`` can take it back. Backends stay a short mount
plan; all the care lives here, once.
"""

from __future__ import annotations

import errno
import os
import warnings
from typing import NoReturn

from rootfs_core import log, mounttable, paths, teardown
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.store import MOUNT_OPS, Op, Record, Step, Store
from rootfs_core.syscalls import MS_BIND, MS_PRIVATE, MS_RDONLY, MS_REMOUNT, Syscalls

# statvfs's ST_* bits that have the same value as mount(2)'s MS_* flags.
_KEPT_FLAGS = os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC | os.ST_NOATIME | os.ST_NODIRATIME | os.ST_RELATIME
# The protections of the prototype's mount that every mount of a root keeps:
# a root must never grant more than the prototype's own mount does (device
# nodes that work, set-id programs that elevate, programs that run).
RESTRICTIONS = os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC
_RESTRICTION_NAMES = {os.ST_NOSUID: "nosuid", os.ST_NODEV: "nodev", os.ST_NOEXEC: "noexec"}


def restrictions_of(path: str) -> int:
    """The ``RESTRICTIONS`` of the mount holding ``path`` (0 if unknown)."""
    try:
        return os.statvfs(path).f_flag & RESTRICTIONS
    except OSError:
        return 0


class BuildContext:
    """One instance under construction (or a throw-away probe instance).

    Attributes a backend reads: ``id``, ``prototype`` (real path of the
    prototype directory), ``root`` (the directory to mount the result on,
    already created), ``instance_dir`` (the instance's own directory, where its
    writable parts go), ``options`` (validated against the backend's
    ``BackendInfo.options``). ``layers`` lists the layers,
    bottom first (``prototype`` is the first; a layer may hold overlay-format
    whiteouts and opaque directories), and ``read_only`` asks for a view that
    refuses every write; neither goes beyond what the backend's
    ``BackendInfo`` declares. ``mount_options`` lists the
    protections of the prototype's mount (``nosuid``, ``nodev``,
    ``noexec``): ``mount`` and ``bind`` apply them by themselves, a backend
    that mounts through a program (``fuse_mount``) passes them to it.

    Everything a backend changes goes through the primitives, which journal
    it first; ``filesystem_of`` answers the one question about the host a
    backend needs. ``syscalls`` (the raw kernel calls, which bypass the
    journal) is deprecated.
    """

    def __init__(self, record: Record, syscalls: Syscalls, store: Store, *, replay: bool = False) -> None:
        self.id = record.id
        self.prototype = record.prototype
        self.root = record.root
        self.instance_dir = os.path.dirname(record.root)
        self.options = record.options
        self._syscalls = syscalls
        self._store = store
        self._record = record
        # Mounting an instance again (after a reboot) replays its backend's
        # plan: what the journal names already is not journaled, made or
        # copied again (the writable data is kept), only mounted.
        self._replayed = {(step.op, step.path) for step in record.steps} if replay else None
        self.remounted: list[str] = []  # what a replay mounted, to undo if it fails
        self.layers = list(record.layers)
        self.read_only = record.read_only
        self.restrictions = 0
        for layer in self.layers:
            self.restrictions |= restrictions_of(layer)

    @property
    def mount_options(self) -> list[str]:
        return [name for flag, name in _RESTRICTION_NAMES.items() if self.restrictions & flag]

    # paths -------------------------------------------------------------
    def path(self, relative: str) -> str:
        """Absolute path of ``relative`` inside the instance directory."""
        if relative.startswith("/") or ".." in relative.split("/"):
            raise ValueError(f"not a relative path inside the instance: {relative!r}")
        return os.path.join(self.instance_dir, relative)

    def resolve_in_root(self, relative: str, *, error: ErrorId = ErrorId.ErrRootSubdirMissing) -> str:
        """Where ``relative`` really is inside the mounted root, following the
        prototype's symlinks as the container would (never out of the root).

        Raises ``RootFSError(error)`` if it does not exist or is not a directory.
        """
        try:
            target = paths.resolve_in_root(self.root, relative)
        except OSError as exc:
            raise RootFSError(error, f"{relative!r} is not usable in the root", cause=exc) from exc
        if not os.path.isdir(target):
            raise RootFSError(error, f"{relative!r} is not a directory in the prototype")
        return target

    # primitives --------------------------------------------------------
    def mkdir(
        self,
        relative: str,
        mode: int = 0o755,
        *,
        owner: tuple[int, int] | None = None,
        error: ErrorId = ErrorId.ErrCreateTempDir,
    ) -> str:
        """Create an empty directory of the instance (with exactly ``mode``, and
        ``owner`` as (uid, gid) if given); removed with rmdir, so it must be
        empty again (or a mount point no longer) by then."""
        return self._make_dir(self.path(relative), mode, owner, Op.DIR, error)

    def scratch_dir(
        self,
        relative: str,
        mode: int = 0o755,
        *,
        owner: tuple[int, int] | None = None,
        error: ErrorId = ErrorId.ErrCreateTempDir,
        layer: bool = False,
    ) -> str:
        """Create a directory whose contents are disposable (an upper layer, a
        writable copy): removed with everything in it, but never across a
        mount. The backend may write files into it directly. An upper layer
        should take the prototype root's mode and owner: the merged root
        shows them. ``layer`` says it holds what is written in the root (an
        upper layer, not overlay's work directory): ``RootFS.usage`` counts
        those."""
        return self._make_dir(self.path(relative), mode, owner, Op.TREE, error, "layer" if layer else "")

    def copy_dir(self, source: str, relative: str, *, error: ErrorId = ErrorId.ErrOverlayDir) -> str:
        """A faithful writable copy of directory ``source`` (device nodes
        recreated, owners, modes, times, links and xattrs kept)."""
        replayed = self._replay_has(Op.TREE, self.path(relative))
        target = self.scratch_dir(relative, error=error, layer=True)
        if replayed:
            return target  # the copy made before, with what was written in it
        log.info("copy %s -> %s", source, target)
        try:
            self._syscalls.copy_tree(source, target)
        except OSError as exc:
            raise RootFSError(error, f"cannot copy {source} to {target}", cause=exc) from exc
        return target

    def mount(
        self,
        source: str,
        target: str,
        fstype: str,
        *,
        flags: int = 0,
        data: str = "",
        error: ErrorId | None = None,
    ) -> None:
        """mount(2) onto ``target``, which must lie inside the instance and
        contain no symlink (use ``resolve_in_root`` for paths in the root).

        The new mount keeps the prototype's protections (``restrictions``)
        and is made private at once (see ``_make_private``).

        ``data`` longer than a page is refused first: mount(2) copies one
        page and silently cuts the rest, which could drop an option or name a
        shorter directory that happens to exist."""
        limit = os.sysconf("SC_PAGE_SIZE") - 1  # the page holds the closing NUL too
        size = len(os.fsencode(data))
        if size > limit:
            is_root = os.path.normpath(target) == self.root
            raise RootFSError(
                error or (ErrorId.ErrBindMountRoot if is_root else ErrorId.ErrBindMountSubdir),
                f"the {fstype or 'mount'} options take {size} bytes, more than mount(2)'s one-page "
                f"limit of {limit}: use a shorter path for the prototype or the base directory",
            )
        error = self._journal_mount(Op.MOUNT, target, error)
        if self._mounted_already(target):
            return
        if not flags & MS_BIND:
            flags |= self.restrictions  # a bind takes them in its remount (``bind``)
        log.info("mount -t %s %s %s (flags %#x, %s)", fstype or "none", source, target, flags, data)
        try:
            self._syscalls.mount(source, target, fstype, flags, data)
        except OSError as exc:
            hint = _hint(exc, source)
            raise RootFSError(error, f"cannot mount {source} on {target}{hint}", cause=exc) from exc
        self._mounted(target)
        self._make_private(target, error)

    def mount_fs(
        self,
        fstype: str,
        options: list[tuple[str, str | None]],
        target: str,
        *,
        flags: int = 0,
        error: ErrorId | None = None,
    ) -> None:
        """Mount a new ``fstype`` on ``target`` (same rules as ``mount``) with
        the new mount API: one ``fsconfig`` per ``(key, value)`` option, so
        no one-page limit and a key may repeat (overlay's ``lowerdir+``, one
        per layer). Where the syscalls object has no ``mount_fs`` (a caller's
        own), falls back to mount(2) with the options joined, if they fit."""
        new_api = getattr(self._syscalls, "mount_fs", None)
        if new_api is None:
            joined = ",".join(key if value is None else f"{key}={value}" for key, value in options)
            self.mount(fstype, target, fstype, flags=flags, data=joined, error=error)
            return
        error = self._journal_mount(Op.MOUNT, target, error)
        if self._mounted_already(target):
            return
        flags |= self.restrictions
        log.info("mount -t %s %s (new mount API, %d options, flags %#x)", fstype, target, len(options), flags)
        try:
            new_api(fstype, options, target, flags)
        except OSError as exc:
            raise RootFSError(error, f"cannot mount {fstype} on {target}", cause=exc) from exc
        self._mounted(target)
        self._make_private(target, error)

    def _make_private(self, target: str, error: ErrorId) -> None:
        """Take a new mount out of any peer group before anything is mounted
        on it. A bind of a prototype on a shared mount (``/`` under systemd)
        is born a peer of it, and whatever is then mounted on the bind would
        appear in the prototype and in every other root; private, nothing
        we mount propagates anywhere, and nothing propagates into a root."""
        try:
            self._syscalls.mount("", target, "", MS_PRIVATE, "")
        except OSError as exc:
            raise RootFSError(error, f"cannot make the mount on {target} private", cause=exc) from exc

    def fuse_mount(self, argv: list[str], target: str, *, error: ErrorId | None = None) -> None:
        """Run a FUSE program that mounts ``target`` (same rules as ``mount``);
        it is unmounted with ``fusermount3 -u``, which works without privilege."""
        error = self._journal_mount(Op.FUSE_MOUNT, target, error)
        if self._mounted_already(target):
            return
        log.info("run %s", " ".join(argv))
        try:
            self._syscalls.run_mount_program(argv, target)
        except OSError as exc:
            raise RootFSError(error, f"cannot mount {target} with {argv[0]}", cause=exc) from exc
        self._mounted(target)
        # The daemon is journaled by pid and start time, so remove waits for
        # exactly it (never for an impostor that took its name).
        daemon = fuse_daemon(target) if self._syscalls.is_mountpoint(target) else None
        undo = ErrorId.ErrUnmountRoot if os.path.normpath(target) == self.root else ErrorId.ErrUnmountSubdir
        step = Step(Op.DAEMON, os.path.normpath(target), undo, daemon or "")
        if not self._journal(step):  # a replay: the new daemon replaces the one a reboot ended
            for known in self._record.steps:
                if (known.op, known.path) == (step.op, step.path):
                    known.detail = step.detail
            self._store.write(self._record)

    def bind(self, source: str, target: str, *, readonly: bool = False, error: ErrorId | None = None) -> None:
        """Bind-mount ``source`` on ``target`` (not recursively), read-only if asked.

        The remount (read-only, or to give a writable copy's bind the
        prototype's protections) keeps the flags the bind inherited (nosuid,
        nodev, noexec, atime): dropping them would lift a protection the
        source's filesystem had, and the kernel refuses it in a user
        namespace anyway.
        """
        if error is None:
            is_root = os.path.normpath(target) == self.root
            error = ErrorId.ErrBindMountRoot if is_root else ErrorId.ErrBindMountSubdir
        self.mount(source, target, "", flags=MS_BIND, error=error)
        try:
            kept = os.statvfs(target).f_flag & _KEPT_FLAGS
            if readonly or self.restrictions & ~kept:
                log.info("remount %s%s", "read-only " if readonly else "", target)
                flags = MS_REMOUNT | MS_BIND | kept | self.restrictions | (MS_RDONLY if readonly else 0)
                self._syscalls.mount("", target, "", flags, "")
        except OSError as exc:
            raise RootFSError(error, f"cannot remount {target}", cause=exc) from exc

    def fail(self, error: ErrorId, message: str) -> NoReturn:
        """Give up with an error id; the core undoes what was done."""
        raise RootFSError(error, message)

    def filesystem_of(self, path: str) -> tuple[str, str]:
        """``(type, mount point)`` of the filesystem holding ``path``, as this
        mount namespace shows it: read-only, for a backend that decides by
        where its instance lives (overlay cannot keep an upper on overlay or
        NFS; aufs not on another union). Raises ``OSError`` or ``ValueError``
        if ``path`` cannot be looked at."""
        return mounttable.filesystem_of(path)

    @property
    def syscalls(self) -> Syscalls:
        """Deprecated (warns now; gone in rootfs-core 0.3): see ``deprecated_syscalls``."""
        return deprecated_syscalls(self._syscalls)

    def make_instance_dirs(self) -> None:
        """Deprecated (warns now; gone in rootfs-core 0.3): the core makes the instance
        directory and the root before the backend's hook (``make_instance_dirs``
        of this module); a backend has nothing to call."""
        warnings.warn(
            "BuildContext.make_instance_dirs() is deprecated: the core makes the instance directories",
            DeprecationWarning,
            stacklevel=2,
        )
        make_instance_dirs(self)

    # internals ---------------------------------------------------------
    def _journal(self, step: Step) -> bool:
        """Write ``step`` to the journal (before it is taken); False, and
        nothing written, for a step a replay finds there already."""
        if self._replay_has(step.op, step.path):
            return False
        self._store.append(self._record, step)
        return True

    def _replay_has(self, op: Op, path: str) -> bool:
        return self._replayed is not None and (op, os.path.normpath(path)) in self._replayed

    def _mounted_already(self, target: str) -> bool:
        """In a replay, whether ``target`` is mounted still (a replay stopped
        half-way and run again)."""
        return self._replayed is not None and self._syscalls.is_mountpoint(target)

    def _mounted(self, target: str) -> None:
        if self._replayed is not None:
            self.remounted.append(os.path.normpath(target))

    def _journal_mount(self, op: Op, target: str, error: ErrorId | None) -> ErrorId:
        """Check a mount target and journal the mount; return the error id a
        failure to mount is reported with."""
        normal = os.path.normpath(target)
        is_root = normal == self.root
        if not paths.is_within(target, self.instance_dir):
            raise RootFSError(ErrorId.ErrPathEscapesRoot, f"mount target {target} is outside the instance")
        if not self._no_symlink(target, normal):
            raise RootFSError(ErrorId.ErrPathEscapesRoot, f"mount target {target} goes through a symlink")
        undo = ErrorId.ErrUnmountRoot if is_root else ErrorId.ErrUnmountSubdir
        self._journal(Step(op, normal, undo))
        if error is not None:
            return error
        return ErrorId.ErrBindMountRoot if is_root else ErrorId.ErrBindMountSubdir

    def _no_symlink(self, target: str, normal: str) -> bool:
        """Whether a mount on ``target`` lands exactly there: mount(2) follows
        a symlink in any component, the last one too. The base directory is
        a real path, so only the components below it are looked at (the
        whole path is resolved only when it is not a normalised one, whose
        ``..`` could climb back out of a symlink)."""
        if target != normal:
            return paths.has_no_symlink(target)
        base = os.path.dirname(self.instance_dir)
        return paths.symlink_on_the_way(target, base, set()) is None and not os.path.islink(target)

    def _make_dir(
        self, path: str, mode: int, owner: tuple[int, int] | None, op: Op, error: ErrorId, detail: str = ""
    ) -> str:
        step = Step(op, path, ErrorId.ErrRemoveMountDir, detail)
        if not self._journal(step):
            if os.path.isdir(path):
                return path  # made before the replay, kept with its contents
            raise RootFSError(
                ErrorId.ErrLayerLost,
                f"{path} is gone: it lived on a filesystem of the instance's own (a tmpfs, "
                "overlayfs's size=) that a reboot emptied; the instance cannot be mounted again "
                "(`rootfs remove` it)",
            )
        log.info("mkdir %s", path)
        try:
            self._syscalls.mkdir(path, mode)
        except FileExistsError as exc:
            # Not ours: make sure no undo ever deletes it.
            self._record.steps.remove(step)
            self._store.write(self._record)
            raise RootFSError(error, f"{path} already exists", cause=exc) from exc
        except OSError as exc:
            raise RootFSError(error, f"cannot create {path}", cause=exc) from exc
        try:
            if owner is not None:
                self._syscalls.chown(path, *owner)
            self._syscalls.chmod(path, mode)  # after chown, which clears set-id bits
        except OSError as exc:
            raise RootFSError(error, f"cannot set the mode or owner of {path}", cause=exc) from exc
        return path


def _hint(exc: OSError, source: str) -> str:
    """A hint for the one mount failure whose errno says nothing useful."""
    if exc.errno == errno.EINVAL and os.path.isabs(source) and mounttable.is_unbindable(source):
        return f": {source} is on an unbindable mount, which cannot be bound (make it private)"
    return ""


def fuse_daemon(target: str) -> str | None:
    """``"PID:START"`` of the FUSE daemon serving the mount at ``target``:
    the process of this user that has ``/dev/fuse`` open and ``target`` as
    the last word of its command line (a FUSE program's usual
    ``PROGRAM [OPTIONS] MOUNTPOINT``); None if there is none."""
    wanted = os.fsencode(target)
    uid = os.geteuid()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        proc = f"/proc/{name}"
        try:
            if os.stat(proc).st_uid != uid:
                continue
            with open(f"{proc}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")[:-1]
            if not argv or argv[-1] != wanted:
                continue
            if not any(os.readlink(f"{proc}/fd/{fd}") == "/dev/fuse" for fd in os.listdir(f"{proc}/fd")):
                continue
        except OSError:
            continue
        start = teardown.process_start(int(name))
        if start is not None:
            return f"{name}:{start}"
    return None


def make_instance_dirs(ctx: BuildContext) -> None:
    """Create the instance directory and the empty root: the core's first
    steps of every generate, before the backend's hook, journaled like any
    other step."""
    ctx._make_dir(ctx.instance_dir, 0o755, None, Op.DIR, ErrorId.ErrCreateTempDir)
    ctx._make_dir(ctx.root, 0o755, None, Op.DIR, ErrorId.ErrCreateMountDir)


def deprecated_syscalls(syscalls: Syscalls) -> Syscalls:
    """What ``ctx.syscalls`` returns, with a warning, until rootfs-core 0.3: the raw
    kernel calls bypass the journal, so whatever a backend does through them
    is never undone on failure nor removed with the root. The primitives
    (``mkdir``, ``scratch_dir``, ``copy_dir``, ``mount``, ``mount_fs``,
    ``bind``, ``fuse_mount``; ``unmount`` on remove) replace them, and
    ``filesystem_of`` answers questions about the host."""
    warnings.warn(
        "ctx.syscalls is deprecated (it bypasses the journal): use the context's primitives "
        "and ctx.filesystem_of; see docs/writing-a-backend.md",
        DeprecationWarning,
        stacklevel=3,
    )
    return syscalls


class RemoveContext:
    """What a backend's optional ``rootfs_remove`` hook sees of an instance."""

    def __init__(self, record: Record, syscalls: Syscalls) -> None:
        self.id = record.id
        self.prototype = record.prototype
        self.root = record.root
        self.instance_dir = os.path.dirname(record.root)
        self.options = record.options
        self._syscalls = syscalls
        self._steps = record.steps

    @property
    def syscalls(self) -> Syscalls:
        """Deprecated (warns now; gone in rootfs-core 0.3): ``unmount`` is the
        journaled way; see ``deprecated_syscalls``."""
        return deprecated_syscalls(self._syscalls)

    def unmount(self, target: str) -> bool:
        """Unmount one of the instance's journaled mounts now, as the core
        would (retried while busy, confirmed gone; ``fusermount3 -u`` for a
        ``fuse_mount``), for a backend that must act between the unmount and
        the deletes; return whether it was mounted. The core's own undo then
        finds it unmounted. A mount the journal does not name (a generate
        that failed before it) was never made: nothing to do."""
        target = os.path.normpath(target)
        step = next((s for s in reversed(self._steps) if s.path == target and s.op in MOUNT_OPS), None)
        if step is None:
            return False
        return teardown.unmount(target, step.undo_error, self._syscalls, fuse=step.op == Op.FUSE_MOUNT)
