"""The snapshotter itself, apart from gRPC: containerd's snapshot semantics
over ``rootfs_core.RootFS``.

- an active snapshot (Prepare) is a writable instance stacking, over an
  empty layer, the layers of its committed ancestors; a view (View) is the
  same made read-only; a committed snapshot (Commit) is a layer in the base
  directory's layer store, made by ``RootFS.commit`` of the active one;
- the mounts handed out are one bind of the instance's mounted root, which
  a Prepare over a stack used before may find made ahead (``spares``);
- keys, parents, kinds, labels and times live in SQLite (``metadata``).

Slow work (a generate, a commit) never runs under the metadata lock: a
prepare reserves its key in memory and writes its row once its instance is
made; a commit reserves its rows first, in a transaction of its own, and
finishes them after. A Remove only deletes the row and records what is left
to delete, in one transaction: a worker thread has a helper process
(``helper``) delete it after the reply (containerd's collector sends Removes
while it holds up the next Prepare).
``Cleanup`` (and start-up) reconcile rows, removals, instances and layers
while no other operation runs; start-up finishes the removals a crash
interrupted.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.layerstore import LayerStore
from rootfs_core.syscalls import syncfs

from rootfs_containerd import filters as filtering
from rootfs_containerd.helper import Helper
from rootfs_containerd.metadata import (
    ACTIVE,
    COMMITTED,
    COMMITTING,
    INSTANCE,
    LAYER,
    PREPARING,
    READY,
    VIEW,
    VISIBLE,
    Metadata,
    Removal,
    Row,
)
from rootfs_containerd.spares import Spares, Stack

if TYPE_CHECKING:
    from rootfs_core.commit import CommitResult

log = logging.getLogger("rootfs_containerd")

STATE_SUBDIR = os.path.join(".rootfs", "containerd")
EMPTY_LAYER = "empty_layer"
MAX_LABEL_PAIR = 4096  # bytes of a label's key and value together, as containerd allows


class Code(enum.Enum):
    """The gRPC status a failure maps to (names of grpc.StatusCode)."""

    NOT_FOUND = "NOT_FOUND"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"


class SnapshotError(Exception):
    def __init__(self, code: Code, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


_CORE_CODES: dict[ErrorId, Code] = {
    ErrorId.ErrNoSuchRoot: Code.NOT_FOUND,
    ErrorId.ErrRootBusy: Code.FAILED_PRECONDITION,
    ErrorId.ErrUnsupportedRequest: Code.FAILED_PRECONDITION,
    ErrorId.ErrLayerInUse: Code.FAILED_PRECONDITION,
    ErrorId.ErrNoSuchLayer: Code.NOT_FOUND,
}


def _from_core(exc: RootFSError, doing: str) -> SnapshotError:
    code = (
        _CORE_CODES.get(exc.error_id, Code.INTERNAL) if isinstance(exc.error_id, ErrorId) else Code.INTERNAL
    )
    return SnapshotError(code, f"{doing}: {exc.error_id.name}: {exc}")


class Gate:
    """Many operations at once (shared), or Cleanup alone (exclusive)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive:
                self._cond.wait()
            self._exclusive = True  # new shared holders wait from now on
            while self._shared:
                self._cond.wait()
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


def choose_backend(base_dir: str, forced: str | None) -> str:
    """The backend serving every snapshot: ``forced``, or the highest-priority
    supported one that stacks layers (``BackendInfo.max_layers >= 2``) and
    makes read-only views. Refuses (RuntimeError) when there is none."""
    rfs = RootFS(base_dir, backend=forced, sweep=False)
    try:
        name = rfs.selected_backend(layers=2)
        rfs.selected_backend(layers=2, read_only=True)
        if forced is None:
            # A view must come from the same backend: force what was found.
            RootFS(base_dir, backend=name, sweep=False).selected_backend(layers=2, read_only=True)
    except RootFSError as exc:
        raise RuntimeError(
            "rootfs-snapshotter needs a backend that stacks layers and makes read-only views "
            "(overlayfs or fuse-overlayfs: pip install rootfs-overlayfs, or rootfs-fuse-overlayfs "
            f"with the fuse-overlayfs program); {exc}"
        ) from exc
    return name


class Snapshotter:
    """containerd's snapshotter operations over one rootfs base directory
    (which it owns: instances and layers no snapshot explains are deleted)."""

    def __init__(
        self,
        base_dir: str,
        backend: str | None = None,
        *,
        spares: int = 0,
        spare_idle: float = 60.0,
        reconcile_every: float = 0.0,
        helper_nice: int = 10,
        sync_commits: bool = True,
    ) -> None:
        """``spares``: how many layer stacks keep a writable root made ahead
        (none unless asked: each is an idle mount; the server asks), each for
        ``spare_idle`` seconds after its last Prepare. ``reconcile_every``:
        a Cleanup reconciles only if the last reconciliation is this many
        seconds old, or an operation failed since (see ``cleanup``).
        ``helper_nice``: how much lower the CPU priority of the two helper
        processes (``helper``) that make the spares and do the deletions is.
        ``sync_commits``: a Commit writes the base directory's filesystem to
        its disk (syncfs) before its row says the layer is there (see
        ``commit``)."""
        os.makedirs(base_dir, mode=0o700, exist_ok=True)
        self.base_dir = os.path.realpath(base_dir)
        self.backend = choose_backend(self.base_dir, backend)
        self._local = threading.local()
        self._gate = Gate()
        self._mounting = threading.Lock()
        self._store = LayerStore(self.base_dir)
        # Keys of prepares under way (no row yet), with their parents; read
        # and changed under the metadata lock, with the rows.
        self._creating: dict[str, str | None] = {}
        # The removal worker's state, under this condition.
        self._work = threading.Condition()
        self._wanted = False  # removals were asked for since the worker last looked
        self._running = False  # the worker is trying them
        self._closing = False
        self._failed: set[int] = set()  # tried and failed: tried again by Cleanup or a restart
        self._reconcile_every = reconcile_every
        self._sync_commits = sync_commits
        self._reconciled = 0.0  # time.monotonic() of the last reconciliation
        # An operation failed after the core made something (an instance or
        # a layer no row may explain): the next Cleanup reconciles.
        self._strays = False
        # Opening a RootFS sweeps what crashed processes left half made.
        RootFS(self.base_dir, backend=self.backend)
        fresh_empty = None
        if not os.path.isdir(os.path.join(self.base_dir, ".rootfs")):
            fresh_empty = self._make_empty_layer()  # initialises the base directory
        state = os.path.join(self.base_dir, STATE_SUBDIR)
        os.makedirs(state, mode=0o700, exist_ok=True)
        self.db = Metadata(os.path.join(state, "snapshots.db"))
        empty = self.db.get_meta(EMPTY_LAYER)
        if empty is None or not os.path.isdir(self._store.path(empty)):
            empty = fresh_empty or self._make_empty_layer()
            self.db.set_meta(EMPTY_LAYER, empty)
        self.empty_layer = empty
        log.info("backend %s, base directory %s, empty layer %s", self.backend, self.base_dir, empty)
        # One helper each for the removal worker and the spares' maker (if
        # spares are kept), so that neither waits for the other's work.
        self._removal_helper = Helper(self.base_dir, self.backend, nice=helper_nice)
        self._spare_helper = Helper(self.base_dir, self.backend, nice=helper_nice) if spares else None
        self._spares = Spares(
            self._make_spare, self._remove_spare, self._gate.shared, stacks=spares, idle=spare_idle
        )
        try:
            self.reconcile(starting=True)
        except BaseException:  # no snapshotter: none of its processes and threads either
            self._spares.close()
            self._close_helpers()
            self.db.close()
            raise
        self._worker = threading.Thread(target=self._remove_in_background, name="remover", daemon=True)
        self._worker.start()

    def close(self) -> None:
        """Let the worker finish the removals asked for, remove the spare
        roots, try once more what failed (a spare may have held a layer),
        then close."""
        self.settle()
        self._spares.close()
        self._wake(retry=True)
        with self._work:
            self._closing = True
            self._work.notify_all()
        self._worker.join()
        self._close_helpers()
        self.db.close()

    def _close_helpers(self) -> None:
        self._removal_helper.close()
        if self._spare_helper is not None:
            self._spare_helper.close()

    def settle(self) -> None:
        """Wait until every removal asked for so far has been tried."""
        with self._work:
            while self._wanted or self._running:
                self._work.wait()

    @property
    def rfs(self) -> RootFS:
        """This thread's RootFS (the core's object is not shared between threads)."""
        rfs: RootFS | None = getattr(self._local, "rfs", None)
        if rfs is None:
            rfs = RootFS(self.base_dir, backend=self.backend, sweep=False)
            self._local.rfs = rfs
        return rfs

    def _make_empty_layer(self) -> str:
        """An empty directory, committed once into the store: what a
        snapshot without parent stacks over."""
        holder = tempfile.mkdtemp(prefix="rootfs-containerd-empty-")
        try:
            os.chmod(holder, 0o755)
            root = self.rfs.generate(holder)
            result = self.rfs.commit(root)
        finally:
            shutil.rmtree(holder, ignore_errors=True)
        layer = _stored_id(result)
        log.info("made the empty layer %s", layer)
        return layer

    def _make_spare(self, stack: Stack) -> str:
        assert self._spare_helper is not None  # spares are made only if some are kept
        return self._spare_helper.generate(*stack)

    def _remove_spare(self, root: str) -> None:
        assert self._spare_helper is not None
        try:
            self._spare_helper.remove(_instance_of(root))
        except BaseException:
            self._strays = True
            raise

    # -------------------------------------------------------------- removals
    def _remove_in_background(self) -> None:
        """The worker: try the removals whenever some were asked for; once
        closing, those left, then stop."""
        while True:
            with self._work:
                while not self._wanted and not self._closing:
                    self._work.wait()
                if not self._wanted:
                    return
                self._wanted = False
                self._running = True
            try:
                self._try_removals()
            finally:
                with self._work:
                    self._running = False
                    self._work.notify_all()

    def _wake(self, *, retry: bool = False) -> None:
        with self._work:
            if retry:
                self._failed.clear()
            self._wanted = True
            self._work.notify_all()

    def _try_removals(self) -> list[Removal]:
        """Delete what Removes left to delete, in their order, but what failed
        since the last Cleanup; return what is done."""
        done = []
        for removal in self.db.removals():
            with self._work:
                if removal.seq in self._failed:
                    continue
            try:
                finished = self._finish(removal)
            except Exception:
                log.exception("removing %s %s failed", removal.what, removal.id)
                finished = False
            if finished:
                self.db.drop_removal(removal.seq)
                done.append(removal)
            else:
                with self._work:
                    self._failed.add(removal.seq)
        return done

    def _finish(self, removal: Removal) -> bool:
        """Delete a removed snapshot's instance or layer; False if that cannot
        be done yet (a root in use, or copies of its mounts in other
        namespaces keep its data): a later try finishes it."""
        try:
            if removal.what == LAYER:
                self._spares.forget(self._store.path(removal.id))
                self._removal_helper.remove_layer(removal.id)
                return True
            return self._removal_helper.remove(removal.id)
        except RootFSError as exc:
            if exc.error_id is ErrorId.ErrNoSuchLayer:
                return True
            log.warning("cannot remove %s %s yet: %s", removal.what, removal.id, exc)
            return False

    # ------------------------------------------------------------- reconcile
    def reconcile(self, *, starting: bool) -> dict[str, list[str]]:
        """Make the rows, the removals, the core's instances and the stored
        layers agree (at start-up, and by Cleanup, with no other operation
        but the removal worker running): rows whose instance or layer is
        gone are dropped (with their descendants), operations a crash
        interrupted are finished or undone, instances and layers that no row
        and no removal explains are deleted. ``starting``: removals are
        finished here (else they are the worker's), and active snapshots and
        views a reboot unmounted are mounted again."""
        self._reconciled = time.monotonic()
        self._strays = False  # what fails from now on sets it again
        report: dict[str, list[str]] = {
            "rows": [],
            "instances": [],
            "layers": [],
            "removed": [],
            "remounted": [],
        }
        rfs = self.rfs
        # Removals first: the worker only ever takes them away, after their
        # instance or layer is gone, so whatever is listed below and is not
        # one of them is not the worker's.
        removals = self.db.removals()
        instances = {inst.id: inst for inst in rfs.instances()}
        layers = set(self._store.ids())
        if starting:
            for removal in self._try_removals():
                instances.pop(removal.id, None)
                layers.discard(removal.id)
                report["removed"].append(removal.id)
            removals = self.db.removals()
        with self.db.transaction():
            for row in self.db.rows():
                if row.state == PREPARING:
                    self.db.delete(row.key)  # its instance, if any, is unexplained now
                    report["rows"].append(row.key)
                elif row.state == COMMITTING:
                    # A Commit that never replied, which containerd counts as
                    # failed. The core may have begun making the instance's
                    # data a layer (it keeps such an instance, unmounted, its
                    # upper perhaps half made portable): the active snapshot
                    # is not given back half changed but dropped, its
                    # instance deleted below as unexplained, and so is a
                    # layer the commit published.
                    self.db.delete(row.key)
                    report["rows"].append(row.key)
        # Rows whose instance or layer is gone, and then their descendants.
        changed = True
        while changed:
            changed = False
            rows = {row.key: row for row in self.db.rows()}
            for row in rows.values():
                if row.kind == COMMITTED:
                    lost = row.layer is None or row.layer not in layers
                else:
                    inst = instances.get(row.instance or "")
                    lost = inst is None or inst.state in ("removing", "incomplete")
                orphan = row.parent is not None and row.parent not in rows
                if lost or orphan:
                    log.warning(
                        "dropping snapshot %s: its %s is gone", row.key, "parent" if orphan else "data"
                    )
                    if row.kind != COMMITTED and row.instance in instances:
                        with contextlib.suppress(RootFSError):
                            rfs.remove(row.instance, missing_ok=True)
                    self.db.delete(row.key)
                    report["rows"].append(row.key)
                    changed = True
        rows = {row.key: row for row in self.db.rows()}
        wanted_instances = {row.instance for row in rows.values() if row.instance}
        wanted_instances |= {removal.id for removal in removals if removal.what == INSTANCE}
        wanted_instances |= {_instance_of(root) for root in self._spares.roots()}
        wanted_layers = {row.layer for row in rows.values() if row.layer} | {self.empty_layer}
        wanted_layers |= {removal.id for removal in removals if removal.what == LAYER}
        for inst in instances.values():
            if inst.id not in wanted_instances:
                log.warning("removing instance %s, which no snapshot explains", inst.id)
                try:
                    rfs.remove(inst.id, missing_ok=True)
                    report["instances"].append(inst.id)
                except RootFSError as exc:
                    log.warning("could not remove instance %s: %s", inst.id, exc)
        for layer in sorted(layers - wanted_layers):
            log.warning("removing layer %s, which no snapshot explains", layer)
            try:
                rfs.remove_layer(layer)
                report["layers"].append(layer)
            except RootFSError as exc:
                log.warning("could not remove layer %s: %s", layer, exc)
        if starting and report["instances"] and removals:
            # A layer is not deleted while a root stacks it: the spare roots
            # of an earlier run, deleted just above, may have held some.
            with self._work:
                self._failed.clear()
            report["removed"] += [removal.id for removal in self._try_removals()]
        if starting:
            for row in rows.values():
                inst = instances.get(row.instance or "")
                if row.kind != COMMITTED and inst is not None and inst.state == "unmounted":
                    try:
                        rfs.mount(inst.id)
                        report["remounted"].append(row.key)
                    except RootFSError as exc:
                        log.error("cannot mount snapshot %s again: %s", row.key, exc)
        return report

    # ------------------------------------------------------------ operations
    def prepare(self, key: str, parent: str, labels: Mapping[str, str]) -> list[tuple[str, str, list[str]]]:
        return self._create(key, parent, labels, read_only=False)

    def view(self, key: str, parent: str, labels: Mapping[str, str]) -> list[tuple[str, str, list[str]]]:
        return self._create(key, parent, labels, read_only=True)

    def _create(
        self, key: str, parent: str, labels: Mapping[str, str], *, read_only: bool
    ) -> list[tuple[str, str, list[str]]]:
        _check_key(key, "key")
        _check_labels(labels)
        if parent and parent == key:
            raise SnapshotError(Code.INVALID_ARGUMENT, f"snapshot {key!r} cannot be its own parent")
        kind = VIEW if read_only else ACTIVE
        with self._gate.shared():
            now = time.time()
            with self.db.locked():
                if self.db.exists(key) or key in self._creating:
                    raise SnapshotError(Code.ALREADY_EXISTS, f"snapshot {key!r} already exists")
                layers: list[str] = []
                if parent:
                    found = self.db.visible(parent)
                    if found is None:
                        raise SnapshotError(Code.NOT_FOUND, f"parent snapshot {parent!r} does not exist")
                    if found.kind != COMMITTED or found.state != READY:
                        raise SnapshotError(
                            Code.INVALID_ARGUMENT, f"parent {parent!r} is not a committed snapshot"
                        )
                    try:
                        chain = self.db.chain(parent)
                    except (KeyError, ValueError) as exc:
                        raise SnapshotError(Code.INVALID_ARGUMENT, f"bad parent chain: {exc}") from exc
                    layers = [row.layer for row in reversed(chain) if row.layer]
                self._creating[key] = parent or None
            root = None
            written = False
            try:
                # By path: an id is looked up as a path first, relative to the working directory.
                stack = tuple(self._store.path(layer) for layer in (self.empty_layer, *layers))
                root = None if read_only else self._spare(stack)
                if root is None:
                    try:
                        root = self.rfs.generate(*stack, read_only=read_only)
                    except RootFSError as exc:
                        raise _from_core(exc, f"cannot make snapshot {key!r}") from exc
                # One statement, so a transaction of its own. Killed before
                # it, the instance is one no row explains: the reconciliation
                # at start-up deletes it.
                row = Row(
                    key, kind, parent or None, READY, _instance_of(root), None, 0, 0, now, now, dict(labels)
                )
                self.db.insert(row)
                written = True
            except BaseException:
                if root is not None and not written:
                    self._strays = True  # an instance no row explains
                raise
            finally:
                with self.db.locked():
                    del self._creating[key]
                self._spares.refill()
            return _bind(root, read_only)

    def _spare(self, stack: Stack) -> str | None:
        """A spare root over ``stack`` that is still mounted, or None."""
        root = self._spares.take(stack)
        if root is None:
            return None
        with contextlib.suppress(OSError):
            if self.rfs.syscalls.is_mountpoint(root):
                log.debug("prepare: a spare root over %s", stack[-1])
                return root
        log.warning("the spare root %s is no longer mounted: made anew", root)
        with contextlib.suppress(RootFSError):
            self._remove_spare(root)
        return None

    def mounts(self, key: str) -> list[tuple[str, str, list[str]]]:
        _check_key(key, "key")
        with self._gate.shared():
            row = self._visible(key)
            if row.kind == COMMITTED or row.state != READY:
                raise SnapshotError(
                    Code.FAILED_PRECONDITION,
                    f"snapshot {key!r} is {row.kind} ({row.state}): it has no mounts",
                )
            return _bind(self._mounted(row), row.kind == VIEW)

    def _mounted(self, row: Row) -> str:
        """The root of the row's instance, mounted again if a reboot unmounted it."""
        if row.instance:
            root = os.path.join(self.base_dir, row.instance, "root")
            with contextlib.suppress(OSError):
                if self.rfs.syscalls.is_mountpoint(root):
                    return root  # mounted, as it nearly always is: no record to read
        inst = self.rfs.instance(row.instance or "") if row.instance else None
        if inst is None:
            raise SnapshotError(Code.NOT_FOUND, f"snapshot {row.key!r} lost its instance (Cleanup drops it)")
        if inst.state == "ready":
            return inst.root
        with self._mounting:
            try:
                return self.rfs.mount(inst.id)
            except RootFSError as exc:
                raise _from_core(exc, f"cannot mount snapshot {row.key!r} again") from exc

    def commit(self, name: str, key: str, labels: Mapping[str, str]) -> None:
        _check_key(name, "name")
        _check_key(key, "key")
        _check_labels(labels)
        with self._gate.shared():
            now = time.time()
            with self.db.transaction():
                row = self.db.visible(key)
                if row is None:
                    raise SnapshotError(Code.NOT_FOUND, f"snapshot {key!r} does not exist")
                if row.kind != ACTIVE or row.state != READY:
                    raise SnapshotError(
                        Code.FAILED_PRECONDITION, f"snapshot {key!r} is {row.kind} ({row.state}), not active"
                    )
                if self.db.exists(name) or name in self._creating:
                    raise SnapshotError(Code.ALREADY_EXISTS, f"snapshot {name!r} already exists")
                self.db.update(key, state=COMMITTING)
                self.db.insert(
                    Row(name, COMMITTED, row.parent, PREPARING, None, None, 0, 0, now, now, dict(labels))
                )
            try:
                self._mounted(row)
                result = self.rfs.commit(row.instance or "")
            except BaseException as exc:
                self._strays = True  # the core may have left a layer half made
                with self.db.transaction():
                    self.db.delete(name)
                    self.db.update(key, state=READY)
                if isinstance(exc, RootFSError):
                    raise _from_core(exc, f"cannot commit {key!r}") from exc
                raise
            try:
                layer = _stored_id(result)
                if self._sync_commits:
                    # The row must not reach the disk before the layer's
                    # files: after a power cut it would name a layer of
                    # empty or missing files, which containerd never unpacks
                    # again (its own snapshotters had that bug: containerd
                    # issues 5854, 8895). A fuse-overlayfs root's upper, or
                    # an overlay whose mount lives on in another namespace,
                    # is not synced by the unmount; nor are the core's
                    # records and the layer's move into the store.
                    syncfs(self.base_dir)
                with self.db.transaction(durable=True):  # an image layer: what containerd cannot make again
                    self.db.delete(key)
                    self.db.update(
                        name,
                        state=READY,
                        layer=layer,
                        bytes=result.bytes,
                        inodes=result.inodes,
                        updated=time.time(),
                    )
            except BaseException:
                self._strays = True  # a published layer no row names
                raise

    def remove(self, key: str) -> None:
        """The snapshot is gone at once (its key free again); its instance or
        layer is deleted after, by the worker, in the order of the Removes
        (a child's instance before its parent's layer). One that cannot be
        deleted yet (a root still in use) is tried again by each Cleanup."""
        _check_key(key, "key")
        with self._gate.shared(), self.db.transaction():
            row = self._visible(key)
            children = self.db.children(key) + [k for k, p in self._creating.items() if p == key]
            if children:
                raise SnapshotError(
                    Code.FAILED_PRECONDITION,
                    f"cannot remove snapshot {key!r}: it has children ({', '.join(sorted(children))})",
                )
            if row.state != READY:
                raise SnapshotError(Code.FAILED_PRECONDITION, f"snapshot {key!r} is {row.state}")
            self.db.delete(key)
            if row.kind == COMMITTED:
                if row.layer and row.layer != self.empty_layer:
                    self.db.add_removal(LAYER, row.layer)
            elif row.instance:
                self.db.add_removal(INSTANCE, row.instance)
        self._wake()

    def stat(self, key: str) -> Row:
        _check_key(key, "key")
        return self._visible(key)

    def update(self, key: str, labels: Mapping[str, str], paths: list[str]) -> Row:
        _check_key(key, "name")
        _check_labels(labels)
        with self.db.transaction():
            row = self._visible(key)
            new = dict(row.labels)
            if not paths:
                new = dict(labels)
            for path in paths:
                if path == "labels":
                    new = dict(labels)
                elif path.startswith("labels."):
                    label = path[len("labels.") :]
                    if labels.get(label):
                        new[label] = labels[label]
                    else:
                        new.pop(label, None)
                else:
                    raise SnapshotError(
                        Code.INVALID_ARGUMENT, f"cannot update field {path!r} of snapshot {key!r}"
                    )
            self.db.update(key, labels=new, updated=time.time())
            return self._visible(key)

    def walk(self, filters: list[str]) -> list[Row]:
        try:
            parsed = [filtering.parse(text) for text in filters if text]
        except filtering.FilterError as exc:
            raise SnapshotError(Code.INVALID_ARGUMENT, str(exc)) from exc
        rows = [row for row in self.db.rows() if row.state in VISIBLE]
        if not parsed:  # containerd's collector lists them all at each collection
            return rows
        return [
            row
            for row in rows
            if filtering.matches(parsed, filtering.snapshot_fields(row.key, row.parent, row.kind, row.labels))
        ]

    def usage(self, key: str) -> tuple[int, int]:
        _check_key(key, "key")
        row = self._visible(key)
        if row.kind == COMMITTED:
            return row.bytes, row.inodes
        if row.kind == VIEW or not row.instance:
            return 0, 0
        try:
            used = self.rfs.usage(row.instance)
        except RootFSError as exc:
            raise _from_core(exc, f"cannot measure {key!r}") from exc
        return used.bytes, used.inodes

    def cleanup(self) -> dict[str, list[str]] | None:
        """The worker tries again the removals that failed; then, if an
        operation failed since the last reconciliation or that is
        ``reconcile_every`` seconds old, reconcile (no other operation runs
        meanwhile) and run the core's gc, and return what they did (None
        when they did not run).

        containerd calls Cleanup after each of its collections, many times a
        second under churn, and a reconciliation reads every record and row
        while Prepares wait: what it finds in a running snapshotter appears
        only by a failure (which asks for one) or by a hand from outside
        (found within ``reconcile_every`` seconds)."""
        self._wake(retry=True)
        if not self._strays and time.monotonic() - self._reconciled < self._reconcile_every:
            return None
        with self._gate.exclusive():
            report = self.reconcile(starting=False)
            gc = self.rfs.gc()
            report["gc"] = [*gc.instances, *gc.unmounted, *gc.orphans]
            return report

    def _visible(self, key: str) -> Row:
        row = self.db.visible(key)
        if row is None:
            raise SnapshotError(Code.NOT_FOUND, f"snapshot {key!r} does not exist")
        return row


def _instance_of(root: str) -> str:
    """The core's instance id of a root (roots are ``<base>/<id>/root``)."""
    return os.path.basename(os.path.dirname(root))


def _bind(root: str, read_only: bool) -> list[tuple[str, str, list[str]]]:
    """The mounts of a snapshot: one bind of its mounted root (type, source, options)."""
    return [("bind", root, ["rbind", "ro" if read_only else "rw"])]


def _check_key(key: str, what: str) -> None:
    if not key:
        raise SnapshotError(Code.INVALID_ARGUMENT, f"empty {what}")
    if "\0" in key:
        raise SnapshotError(Code.INVALID_ARGUMENT, f"{what} {key!r} holds a NUL byte")


def _check_labels(labels: Mapping[str, str]) -> None:
    for name, value in labels.items():
        if not name:
            raise SnapshotError(Code.INVALID_ARGUMENT, "a label with an empty name")
        if len(name.encode()) + len(value.encode()) > MAX_LABEL_PAIR:
            raise SnapshotError(Code.INVALID_ARGUMENT, f"label {name!r} exceeds {MAX_LABEL_PAIR} bytes")


def _stored_id(result: CommitResult) -> str:
    """The layer-store id of a commit into the store, which always has one
    (a real check: an ``assert`` would vanish under ``python -O``)."""
    if result.id is None:
        raise RootFSError(ErrorId.ErrCommit, f"a commit into the layer store gave no id ({result.layer})")
    return result.id
