"""Commit: what was written in an instance, left as a portable layer.

The layer is in overlay's format, ready for ``generate(BASE, LAYER)``:
a deletion is a whiteout (a 0/0 character device), a directory that replaced
what lay below is opaque (``trusted.overlay.opaque=y``). Nothing else of a
mount's private state survives:

- the kernel overlay's upper (mounted with ``redirect_dir=on,index=on``)
  carries ``trusted.overlay.redirect``, ``origin``, ``impure``, ``uuid``,
  ``nlink``, ``metacopy`` that mean nothing outside that mount. A renamed
  directory (one with a redirect) is replaced by a full copy of what the
  merged root shows there, made opaque (its old name has its whiteout
  already); a metacopy file by a full copy; a name that shows a copied-up
  file only through overlay's index (a prototype hardlink written through
  another name) becomes a hardlink in the layer. All of that is read from
  the merged root while it is still mounted; then every ``trusted.overlay.*``
  attribute but ``opaque=y`` is dropped.
- fuse-overlayfs (and aufs) may write whiteouts as ``.wh.NAME`` files and
  mark opaque directories with ``.wh..wh..opq`` (fuse-overlayfs 1.10 as root
  writes 0/0 devices, but also ``.wh..wh..opq`` files and ``.wh..opq``
  devices beside the opaque attribute, and ``user.fuseoverlayfs.*``
  attributes): all turned into overlay's forms.
- a quilt's writable directories become opaque directories of the layer,
  each at its path relative to the root.

Other attributes (``user.*``, ``security.*``, ACLs) are kept.

How the writable parts of an instance are found, for every backend: in its
journal, a ``tree`` step followed (before any other) by a mount on the root
is the upper of a union (if it is marked as the instance's layer); one
followed by a mount on a directory of the root is a writable directory bound
there.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import os
import shutil
import stat
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from rootfs_core import log
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.store import MOUNT_OPS, Claim, Op, Record
from rootfs_core.syscalls import Syscalls

if TYPE_CHECKING:
    from rootfs_core.core import RootFS


OPAQUE = "trusted.overlay.opaque"
OVERLAY_PREFIX = "trusted.overlay."
FUSE_PREFIX = "user.fuseoverlayfs."
WH = ".wh."
WH_OPQ = ".wh..wh..opq"
# Backends whose upper may hold aufs-style whiteouts (.wh.NAME): only
# there is such a name overlay's, not a file someone wrote.
AUFS_STYLE = frozenset({"fuse-overlayfs", "aufs"})
_RENAME_NOREPLACE = 1


@dataclasses.dataclass(frozen=True)
class CommitResult:
    """What ``RootFS.commit`` made."""

    layer: str  # its path
    bytes: int
    inodes: int
    seconds: float
    id: str | None = None  # in the layer store; None for a layer given a DEST


@dataclasses.dataclass
class Plan:
    """Where an instance keeps what was written in it."""

    union: str | None = None  # the upper of a union root (overlay's format)
    copies: list[tuple[str, str]] = dataclasses.field(default_factory=list)  # (dir, relative target)
    # Read from the mounted root before it goes: relative path -> staged copy.
    staged: dict[str, str] = dataclasses.field(default_factory=dict)
    # (alias, name in the upper): names only overlay's index made one file.
    aliases: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    # relative dir -> (mode, uid, gid, atime_ns, mtime_ns) in the merged root,
    # for directories an alias needs in the layer.
    parents: dict[str, tuple[int, int, int, int, int]] = dataclasses.field(default_factory=dict)


class Ops:
    """The file operations of a commit beyond ``Syscalls``: one object, so
    that a test can make any of them fail (``commit.OPS``)."""

    def rename(self, source: str, target: str) -> None:
        os.rename(source, target)

    def rename_noreplace(self, source: str, target: str) -> None:
        """rename(2) that fails with EEXIST instead of replacing an empty
        directory someone made at ``target`` meanwhile."""
        lib = ctypes.CDLL(None, use_errno=True)
        at_fdcwd = -100
        if lib.renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(target), _RENAME_NOREPLACE):
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), target)

    def setxattr(self, path: str, key: str, value: bytes) -> None:
        os.setxattr(path, key, value, follow_symlinks=False)

    def removexattr(self, path: str, key: str) -> None:
        os.removexattr(path, key, follow_symlinks=False)

    def unlink(self, path: str) -> None:
        os.unlink(path)

    def mknod_whiteout(self, path: str) -> None:
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))

    def link(self, source: str, target: str) -> None:
        os.link(source, target, follow_symlinks=False)


OPS = Ops()


# ------------------------------------------------------------------ the plan
def find_writable(record: Record) -> Plan:
    """The union upper or the writable directories of ``record``'s instance,
    from its journal (see the module's docstring)."""
    plan = Plan()
    root = record.root
    steps = record.steps
    for index, step in enumerate(steps):
        if step.op != Op.TREE:
            continue
        target = next(
            (
                later.path
                for later in steps[index + 1 :]
                if later.op in MOUNT_OPS and _within(later.path, root)
            ),
            None,
        )
        if target is None:
            continue
        if target == root:
            if step.detail == "layer" and plan.union is None:
                plan.union = step.path
        else:
            plan.copies.append((step.path, os.path.relpath(target, root)))
    if plan.union is not None:
        plan.copies = []  # a union's writable parts are its upper alone
    return plan


def needs_merged_view(upper: str) -> list[str]:
    """Relative paths in the upper that only the merged root shows in full:
    renamed directories (a redirect) and metacopy files, outermost only."""
    found = []
    device = os.lstat(upper).st_dev
    pending = [""]
    while pending:
        relative = pending.pop()
        directory = os.path.join(upper, relative)
        with os.scandir(directory) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                rel = os.path.join(relative, entry.name)
                if stat.S_ISDIR(st.st_mode):
                    if _xattr(entry.path, OVERLAY_PREFIX + "redirect") is not None:
                        found.append(rel)
                    elif st.st_dev == device:
                        pending.append(rel)
                elif stat.S_ISREG(st.st_mode) and _xattr(entry.path, OVERLAY_PREFIX + "metacopy") is not None:
                    found.append(rel)
    return sorted(found)


def _upper(plan: Plan) -> str:
    """The union's upper, for the steps only a union has (a real check:
    an ``assert`` would vanish under ``python -O``)."""
    if plan.union is None:
        raise RootFSError(ErrorId.ErrCommit, "a union's step was asked of an instance that is no union")
    return plan.union


def stage_from_merged(plan: Plan, root: str, staging: str, syscalls: Syscalls) -> None:
    """While ``root`` is mounted: copy what ``needs_merged_view`` names from
    it into ``staging``, and find the names that share a copied-up file only
    through overlay's index."""
    for number, relative in enumerate(needs_merged_view(_upper(plan))):
        source = os.path.join(root, relative)
        target = os.path.join(staging, f"m{number}")
        try:
            if os.path.isdir(source) and not os.path.islink(source):
                syscalls.mkdir(target, 0o700)
                syscalls.copy_tree(source, target)
            else:
                shutil.copy2(source, target, follow_symlinks=False)
                st = os.lstat(source)
                os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
                os.chmod(target, stat.S_IMODE(st.st_mode))
        except OSError as exc:
            raise RootFSError(
                ErrorId.ErrCommit, f"cannot copy {source} out of the mounted root", cause=exc
            ) from exc
        plan.staged[relative] = target
    _find_aliases(plan, root)


def _find_aliases(plan: Plan, root: str) -> None:
    """Names of the merged root that show an upper file although the upper
    lacks them (overlay's index, fuse-overlayfs's inode table): only looked
    for when some upper file has several links in the merged root."""
    upper = _upper(plan)
    wanted: dict[tuple[int, int], str] = {}
    for relative in _walk(upper):
        st = os.lstat(os.path.join(upper, relative))
        if not stat.S_ISREG(st.st_mode):
            continue
        try:
            merged = os.lstat(os.path.join(root, relative))
        except OSError:
            continue
        if merged.st_nlink > 1:
            wanted[(merged.st_dev, merged.st_ino)] = relative
    if not wanted:
        return
    for relative in _walk(root):
        full = os.path.join(root, relative)
        st = os.lstat(full)
        key = (st.st_dev, st.st_ino)
        if stat.S_ISREG(st.st_mode) and key in wanted and not os.path.lexists(os.path.join(upper, relative)):
            plan.aliases.append((relative, wanted[key]))
            parent = os.path.dirname(relative)
            while parent and parent not in plan.parents:
                pst = os.lstat(os.path.join(root, parent))
                plan.parents[parent] = (
                    stat.S_IMODE(pst.st_mode),
                    pst.st_uid,
                    pst.st_gid,
                    pst.st_atime_ns,
                    pst.st_mtime_ns,
                )
                parent = os.path.dirname(parent)


def _walk(top: str) -> list[str]:
    """Every path below ``top`` (relative), never following a symlink nor
    leaving its filesystem."""
    device = os.lstat(top).st_dev
    found = []
    pending = [""]
    while pending:
        relative = pending.pop()
        with os.scandir(os.path.join(top, relative)) as entries:
            for entry in entries:
                rel = os.path.join(relative, entry.name)
                found.append(rel)
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode) and st.st_dev == device:
                    pending.append(rel)
    return found


# ------------------------------------------------------- the layer, assembled
def finish_union(plan: Plan, backend: str, trash: str, syscalls: Syscalls) -> str:
    """Once unmounted: the upper made a portable layer in place (staged
    copies in, aliases linked, private state out); returns its path."""
    upper = _upper(plan)
    for number, (relative, staged) in enumerate(sorted(plan.staged.items())):
        target = os.path.join(upper, relative)
        parent = os.path.dirname(target)
        times = os.lstat(parent)
        if os.path.lexists(target):
            _move(target, os.path.join(trash, f"old{number}"), syscalls)
        _move(staged, target, syscalls)
        if os.path.isdir(target) and not os.path.islink(target):
            OPS.setxattr(target, OPAQUE, b"y")
        os.utime(parent, ns=(times.st_atime_ns, times.st_mtime_ns), follow_symlinks=False)
    for alias, existing in plan.aliases:
        _make_parents(upper, os.path.dirname(alias), plan.parents)
        if not os.path.lexists(os.path.join(upper, alias)):
            OPS.link(os.path.join(upper, existing), os.path.join(upper, alias))
    for parent in sorted(plan.parents, key=len, reverse=True):  # deepest first: a link touched them
        _mode, _uid, _gid, atime, mtime = plan.parents[parent]
        path = os.path.join(upper, parent)
        if os.path.isdir(path):
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)
    normalise(upper, aufs_style=backend in AUFS_STYLE)
    return upper


def assemble_copies(plan: Plan, prototype_root: str, layer: str, trash: str, syscalls: Syscalls) -> None:
    """Once unmounted: the writable directories moved into ``layer`` (made
    here, with the root's mode and owner), each opaque at its place;
    parents they need are made as the prototype has them. A directory
    nested in another one replaces what the outer copy holds there."""
    _make_like(layer, prototype_root)
    for number, (copy, relative) in enumerate(sorted(plan.copies, key=lambda item: item[1].count("/"))):
        target = os.path.join(layer, relative)
        parts = relative.split("/")
        for depth in range(1, len(parts)):
            partial = "/".join(parts[:depth])
            if not os.path.isdir(os.path.join(layer, partial)):
                _make_like(os.path.join(layer, partial), os.path.join(prototype_root, partial))
        if os.path.lexists(target):
            _move(target, os.path.join(trash, f"shadowed{number}"), syscalls)
        _move(copy, target, syscalls)
        OPS.setxattr(target, OPAQUE, b"y")
    for relative in sorted({os.path.dirname(r) for _, r in plan.copies if "/" in r}, key=len, reverse=True):
        source = os.lstat(os.path.join(prototype_root, relative))
        os.utime(os.path.join(layer, relative), ns=(source.st_atime_ns, source.st_mtime_ns))
    source = os.lstat(prototype_root)
    os.utime(layer, ns=(source.st_atime_ns, source.st_mtime_ns))
    normalise(layer, aufs_style=False)


def undo_copies(plan: Plan, layer: str) -> None:
    """Best effort after a failure: the writable directories back where the
    instance keeps them."""
    for copy, relative in plan.copies:
        moved = os.path.join(layer, relative)
        if not os.path.lexists(copy) and os.path.isdir(moved):
            try:
                os.rename(moved, copy)
            except OSError as exc:
                log.warning("could not move %s back to %s: %s", moved, copy, exc)


def normalise(top: str, *, aufs_style: bool) -> None:
    """Overlay's forms only: aufs-style whiteouts and opaque markers turned
    into overlay's (``aufs_style``), every private attribute dropped."""
    pending = [top]
    device = os.lstat(top).st_dev
    _clean_xattrs(top, directory=True)
    while pending:
        directory = pending.pop()
        with os.scandir(directory) as scan:
            entries = list(scan)
        names = {entry.name for entry in entries}
        for entry in entries:
            st = entry.stat(follow_symlinks=False)
            if aufs_style and entry.name.startswith(WH):
                if entry.name in (WH_OPQ, ".wh..opq"):
                    OPS.unlink(entry.path)
                    OPS.setxattr(directory, OPAQUE, b"y")
                    continue
                if entry.name.startswith(WH + WH):
                    # aufs's own housekeeping (.wh..wh.aufs, .wh..wh.plnk ...)
                    if stat.S_ISDIR(st.st_mode):
                        shutil.rmtree(entry.path)
                    else:
                        OPS.unlink(entry.path)
                    continue
                hidden = entry.name[len(WH) :]
                OPS.unlink(entry.path)
                if hidden not in names:
                    OPS.mknod_whiteout(os.path.join(directory, hidden))
                continue
            if stat.S_ISLNK(st.st_mode):
                continue
            if stat.S_ISREG(st.st_mode) and _xattr(entry.path, OVERLAY_PREFIX + "whiteout") is not None:
                OPS.unlink(entry.path)  # an xattr whiteout: overlay's device form instead
                OPS.mknod_whiteout(entry.path)
                continue
            _clean_xattrs(entry.path, directory=stat.S_ISDIR(st.st_mode))
            if stat.S_ISDIR(st.st_mode) and st.st_dev == device:
                pending.append(entry.path)


def _clean_xattrs(path: str, *, directory: bool) -> None:
    try:
        keys = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return
        raise
    for key in keys:
        if key == OPAQUE and directory and _xattr(path, key) == b"y":
            continue
        if key.startswith((OVERLAY_PREFIX, FUSE_PREFIX)):
            OPS.removexattr(path, key)


def private_xattrs(top: str) -> list[str]:
    """``path: key`` of every attribute a portable layer must not hold
    (for checks and tests)."""
    found = []
    for relative in ["", *_walk(top)]:
        path = os.path.join(top, relative)
        if os.path.islink(path):
            continue
        for key in os.listxattr(path, follow_symlinks=False):
            if key == OPAQUE and os.path.isdir(path) and _xattr(path, key) == b"y":
                continue
            if key.startswith((OVERLAY_PREFIX, FUSE_PREFIX)):
                found.append(f"{relative or '.'}: {key}")
    return found


# ------------------------------------------------------------------ helpers
def _xattr(path: str, key: str) -> bytes | None:
    try:
        return os.getxattr(path, key, follow_symlinks=False)
    except OSError:
        return None


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def _move(source: str, target: str, syscalls: Syscalls) -> None:
    """rename, or a faithful copy (then the source deleted) across filesystems."""
    try:
        OPS.rename(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    if os.path.isdir(source) and not os.path.islink(source):
        syscalls.mkdir(target, 0o700)
        syscalls.copy_tree(source, target)
        syscalls.remove_tree(source)
    else:
        shutil.copy2(source, target, follow_symlinks=False)
        st = os.lstat(source)
        os.chown(target, st.st_uid, st.st_gid, follow_symlinks=False)
        OPS.unlink(source)


def _make_like(path: str, model: str) -> None:
    st = os.lstat(model) if os.path.isdir(model) else None
    os.mkdir(path, 0o700)
    if st is not None:
        os.chown(path, st.st_uid, st.st_gid)
        os.chmod(path, stat.S_IMODE(st.st_mode))
    else:
        os.chmod(path, 0o755)


def _make_parents(top: str, relative: str, known: dict[str, tuple[int, int, int, int, int]]) -> None:
    if not relative or os.path.isdir(os.path.join(top, relative)):
        return
    _make_parents(top, os.path.dirname(relative), known)
    mode, uid, gid, _atime, _mtime = known.get(relative, (0o755, 0, 0, 0, 0))
    path = os.path.join(top, relative)
    os.mkdir(path, 0o700)
    os.chown(path, uid, gid)
    os.chmod(path, mode)


# ------------------------------------------------------------ the whole commit
def run(rfs: RootFS, root_or_id: str, dest: str | None) -> CommitResult:
    """``RootFS.commit``: checks (nothing touched if one fails) -> busy?
    -> read what only the mounted root shows into a work directory of the
    layer store -> claim the instance -> busy again? -> unmount -> the layer
    assembled from what the instance wrote -> published under its final
    name by one rename (or copied under a temporary name, then renamed) ->
    the rest of the instance deleted, its record dropped.

    Before the unmount a failure leaves the instance as it was (ready).
    After it and before the layer appears, the instance stays, unmounted,
    with its data and its record (``remove`` takes it apart; ``commit``
    again finishes the job when nothing needs the mounted root any more).
    Once the layer is published, a failure to delete the rest of the
    instance leaves it marked incomplete, for ``gc``."""
    from rootfs_core import teardown
    from rootfs_core.layerstore import LayerStore

    started = time.monotonic()
    store = rfs._store
    layers = LayerStore(rfs.base_dir)
    text = os.fspath(root_or_id)
    instance_id = rfs._instance_id(text)
    record = _ready_record(rfs, instance_id, text)
    plan = find_writable(record)
    if plan.union is None and not plan.copies:
        raise RootFSError(
            ErrorId.ErrUnsupportedRequest,
            f"{record.root} has no writable layer or directory in its journal: nothing to commit",
        )
    layer_id = layers.new_id()
    target = check_dest(rfs, record, dest) if dest is not None else layers.path(layer_id)
    instance_dir = store.instance_dir(instance_id)
    mounted = rfs.syscalls.is_mountpoint(record.root)
    teardown.check(record.steps, instance_dir)
    signature = teardown.signature(instance_dir, record.steps, record.prototype, rfs.syscalls)
    teardown.refuse_if_busy(record.steps, signature, rfs.syscalls)

    store.ensure()
    layers.ensure()
    work = layers.temp_path(layer_id)
    _syscall(rfs.syscalls.mkdir, work, 0o700, what="create the work directory")
    try:
        if plan.union is not None:
            merged = needs_merged_view(plan.union)
            if merged and not mounted:
                raise RootFSError(
                    ErrorId.ErrCommit,
                    f"{record.root} is not mounted, and what it holds at {', '.join(merged[:3])} shows "
                    "in full only in the mounted root (a renamed directory): it cannot be committed now "
                    "(remove it)",
                )
            if mounted:
                stage_from_merged(plan, record.root, work, rfs.syscalls)
        with store.claim(instance_id) as claim:
            result = _take_layer(rfs, record, claim, plan, target, work, layer_id, started)
    finally:
        try:
            if os.path.lexists(work):
                rfs.syscalls.remove_tree(work)
        except OSError as exc:
            log.warning("could not delete %s: %s (`rootfs gc` deletes it)", work, exc)
    if dest is None:
        layers.write_meta(
            layer_id,
            {
                "id": layer_id,
                "created": time.time(),
                "instance": record.id,
                "backend": record.backend,
                "layers": record.layers,
            },
        )
    log.info("committed %s as %s in %.3fs", record.root, result.layer, result.seconds)
    return result


def _ready_record(rfs: RootFS, instance_id: str, text: str) -> Record:
    store = rfs._store
    record = store.read(instance_id)
    if record is None:
        raise RootFSError(ErrorId.ErrNoSuchRoot, f"no instance {text!r} in {rfs.base_dir}")
    if record.removing or store.is_incomplete(instance_id):
        raise RootFSError(
            ErrorId.ErrRootBusy,
            f"{record.root} is being made or removed (or was interrupted: `rootfs gc`); nothing was touched",
        )
    if record.read_only:
        raise RootFSError(
            ErrorId.ErrUnsupportedRequest,
            f"{record.root} is a read-only view: nothing was written in it to commit",
        )
    held = _layers_on_own_mounts(record)
    if held:
        raise RootFSError(
            ErrorId.ErrUnsupportedRequest,
            f"{record.root} keeps what was written in it on a filesystem of its own ({held}, e.g. "
            "overlayfs's size=), which unmounting would lose: it cannot be committed yet; "
            "nothing was touched",
        )
    return record


def _layers_on_own_mounts(record: Record) -> str | None:
    """The first of the instance's own mounts (but its root) that a
    writable directory lies below, or None. Commit unmounts every mount
    before it takes the layer, and a tmpfs takes its files with it."""
    mounts = [s.path for s in record.steps if s.op in MOUNT_OPS and s.path != record.root]
    for step in record.steps:
        if step.op == Op.TREE:
            for point in mounts:
                if step.path.startswith(point + "/"):
                    return point
    return None


def check_dest(rfs: RootFS, record: Record, dest: str) -> str:
    """DEST as an absolute path, refused (``ErrLayerDest``, nothing touched)
    if it exists, its parent does not, or it lies inside the base
    directory (the layer store too) or inside any layer of an instance."""
    from rootfs_core import paths

    if not dest:
        raise RootFSError(ErrorId.ErrLayerDest, "the destination is empty")
    absolute = os.path.abspath(dest)
    parent, name = os.path.split(absolute.rstrip("/") or "/")
    if not name or name in (".", ".."):
        raise RootFSError(ErrorId.ErrLayerDest, f"destination {dest!r} names no new directory")
    if os.path.lexists(absolute):
        raise RootFSError(ErrorId.ErrLayerDest, f"destination {dest!r} exists already; nothing was touched")
    if not os.path.isdir(parent):
        raise RootFSError(
            ErrorId.ErrLayerDest, f"the parent {parent!r} of destination {dest!r} is not a directory"
        )
    real = os.path.join(os.path.realpath(parent), name)
    forbidden = [("the base directory", rfs.base_dir)]
    used = set(record.layers)
    for other in rfs._store.ids():
        try:
            found = rfs._store.read(other)
        except RootFSError:
            continue
        if found is not None:
            used.update(found.layers)
    forbidden += [("the layer", layer) for layer in sorted(used)]
    for what, path in forbidden:
        if paths.is_within(real, path):
            raise RootFSError(
                ErrorId.ErrLayerDest,
                f"destination {dest!r} lies inside {what} {path}: layers are read-only inputs; "
                "nothing was touched",
            )
    return real


def _take_layer(
    rfs: RootFS,
    record: Record,
    claim: Claim,
    plan: Plan,
    target: str,
    work: str,
    layer_id: str,
    started: float,
) -> CommitResult:
    """Under the instance's claim: unmount, assemble, publish, take apart."""
    from rootfs_core import teardown
    from rootfs_core.usage import measure

    store = rfs._store
    instance_dir = store.instance_dir(record.id)
    try:
        current = store.read(record.id)
        if current is None or current.steps != record.steps or current.removing:
            raise RootFSError(
                ErrorId.ErrRootBusy,
                f"{record.root} changed while it was being committed; nothing was touched",
            )
        signature = teardown.signature(instance_dir, record.steps, record.prototype, rfs.syscalls)
        teardown.refuse_if_busy(record.steps, signature, rfs.syscalls)
    except BaseException:
        claim.finish()  # nothing was touched: as ready as before
        raise
    # Kept whole in the record of an instance a failure leaves: its mounts
    # are undone again harmlessly, and they say where its layer is.
    journal = list(record.steps)
    try:
        store.mark_committing(record)  # a kill from here on leaves the instance, never sweeps it away
        teardown.unmount_all(record.steps, rfs.syscalls)
    except BaseException:
        if len(record.steps) == len(journal):
            claim.finish()  # the first unmount failed: still whole and mounted
        else:
            record.steps[:] = journal
            _keep(rfs, record, claim)
        raise
    trash = os.path.join(work, "trash")
    layer = os.path.join(work, "layer")
    try:
        rfs.syscalls.mkdir(trash, 0o700)
        _wait_for_daemons(record)
        if plan.union is not None:
            source = finish_union(plan, record.backend, trash, rfs.syscalls)
        else:
            assemble_copies(plan, record.layers[0], layer, trash, rfs.syscalls)
            source = layer
        _publish(source, target, layer_id, rfs.syscalls, work if paths_within(target, rfs.base_dir) else None)
        store.mark_committed(record)
    except BaseException as exc:
        if plan.copies:
            undo_copies(plan, layer)
        record.steps[:] = journal
        _keep(rfs, record, claim)
        if isinstance(exc, RootFSError) or not isinstance(exc, Exception):
            raise
        raise RootFSError(
            ErrorId.ErrCommit,
            f"cannot make the layer of {record.root}; the instance is kept, unmounted, with its data "
            f"(`rootfs commit` again, or `rootfs remove`)",
            cause=exc,
        ) from exc
    size, inodes = measure([target])
    try:
        teardown.delete_all(record.steps, rfs.syscalls)
        store.delete(record.id)
        claim.finish()
    except (RootFSError, OSError) as exc:
        store.write(record)
        log.warning(
            "the layer %s is made, but %s could not be deleted: %s (`rootfs gc`)", target, record.root, exc
        )
    return CommitResult(
        target,
        size,
        inodes,
        time.monotonic() - started,
        layer_id if paths_within(target, rfs.base_dir) else None,
    )


def paths_within(path: str, parent: str) -> bool:
    return _within(os.path.normpath(path), os.path.normpath(parent))


def _keep(rfs: RootFS, record: Record, claim: Claim) -> None:
    """After a failure past the first unmount: the record names exactly
    what is left, and the instance is no longer marked (nothing sweeps its
    data away; it is listed unmounted, and remove or commit works)."""
    record.committing = False
    try:
        rfs._store.write(record)
        claim.finish()
    except RootFSError as exc:
        log.error("could not update the record of %s: %s", record.root, exc)


def _wait_for_daemons(record: Record) -> None:
    """A FUSE daemon may still write the upper just after its unmount."""
    from rootfs_core import teardown

    for step in record.steps:
        if step.op != Op.DAEMON:
            continue
        pid_text, _, start = step.detail.partition(":")
        if not pid_text.isdigit():
            continue
        deadline = time.monotonic() + teardown.DAEMON_EXIT_TIMEOUT
        while teardown.process_start(int(pid_text)) == start:
            if time.monotonic() >= deadline:
                raise RootFSError(
                    ErrorId.ErrUnmountRoot,
                    f"the FUSE daemon (pid {pid_text}) of {step.path} still runs after its unmount",
                )
            time.sleep(0.01)


def _publish(source: str, target: str, layer_id: str, syscalls: Syscalls, work: str | None) -> None:
    """``source`` appears at ``target`` finished: one rename where both are
    on one mount, else a copy under a temporary name beside ``target``
    (in the layer store: in ``work``, which ``gc`` sweeps), renamed at the end."""
    try:
        OPS.rename_noreplace(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    parent, name = os.path.split(target)
    temporary = os.path.join(work, "copy") if work else os.path.join(parent, f".{name}.rootfs-tmp-{layer_id}")
    syscalls.mkdir(temporary, 0o700)
    try:
        syscalls.copy_tree(source, temporary)
        OPS.rename_noreplace(temporary, target)
    except BaseException:
        try:
            syscalls.remove_tree(temporary)
        except OSError as exc:
            log.warning("could not delete %s: %s", temporary, exc)
        raise


def _syscall(call: Callable[..., None], *args: object, what: str) -> None:
    try:
        call(*args)
    except OSError as exc:
        raise RootFSError(ErrorId.ErrCommit, f"cannot {what} ({args[0]})", cause=exc) from exc
