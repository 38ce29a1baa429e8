"""``RootFS``: the instance lifecycle, written once for every backend.

generate: validate -> select a backend -> claim an id (marked incomplete) ->
journal and create the instance dirs -> the backend's mount plan -> confirm
the root is mounted -> mark ready. Any failure, including an interrupt,
undoes the journal in reverse, so a failed generate leaves nothing: no
directory, no mount, no record (the seed could leave directories).

remove: refuse what this base dir did not make -> claim -> check the
journal -> refuse if any process in any mount namespace uses the instance
-> the backend's optional remove hook -> unmount -> delete, unless copies of
the mounts live on in other namespaces (then the data stays, the instance
is ``removing``, and ``gc`` finishes it once they are gone) -> drop the
record. If undoing stops half-way, the record keeps exactly what is left,
and a later remove or ``gc`` finishes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import stat
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from rootfs_core import basedir, log, mounttable, paths, teardown
from rootfs_core import sweep as sweeping
from rootfs_core.context import BuildContext, RemoveContext, make_instance_dirs
from rootfs_core.errors import ErrorId, ImplErrorId, RootFSError
from rootfs_core.hookspecs import PROBE_PROTOTYPE, Probe
from rootfs_core.layerstore import LayerStore
from rootfs_core.registry import Registry
from rootfs_core.selection import ProbeCache, Prober, choose, default_options, forced_backend
from rootfs_core.store import Claim, Op, Record, Store, is_instance_id
from rootfs_core.sweep import GcReport
from rootfs_core.syscalls import LinuxSyscalls, ProgressCallback, Syscalls
from rootfs_core.usage import Usage, measure

if TYPE_CHECKING:
    from rootfs_core.commit import CommitResult
    from rootfs_core.layerstore import Layer


class State(enum.StrEnum):
    """An instance's state, as ``list`` shows it (the values are its words)."""

    READY = "ready"
    INCOMPLETE = "incomplete"  # being made, or a generate crashed
    # its removal began (and copies of its mounts in other namespaces may
    # keep its data until they go)
    REMOVING = "removing"
    UNMOUNTED = "unmounted"  # ready, but its mounts are gone (a reboot): remove still works


@dataclasses.dataclass(frozen=True)
class Instance:
    """A generated root as ``RootFS.instances()`` reports it."""

    id: str
    root: str
    backend: str
    prototype: str
    state: State
    created: float
    options: dict[str, str]
    layers: list[str] = dataclasses.field(default_factory=list)  # bottom first
    read_only: bool = False


@dataclasses.dataclass(frozen=True)
class BackendStatus:
    """One discovered backend and its verdict on this host."""

    name: str
    priority: int | None
    supported: bool
    reason: str | None
    selected: bool
    target: str


class RootFS:
    """Writable roots generated from read-only prototypes, in one base directory.

    ``backend`` forces a backend by name (else ``ROOTFS_BACKEND``, the
    configuration file, or the highest-priority supported one). ``syscalls``
    replaces the kernel calls (for tests). ``registry`` replaces entry-point
    discovery (for tests that bring their own backends). ``sweep=False``
    skips taking apart crashed instances on opening (``gc --dry-run`` must
    not change anything). ``progress`` is called with a
    ``rootfs_core.syscalls.CopyProgress`` while a long copy runs (the quilt's
    writable directories, say), so a caller can display it; rootfs itself
    never writes to the terminal. With ``syscalls=``, give it to your own
    ``LinuxSyscalls(progress=...)`` instead.
    """

    def __init__(
        self,
        rw_base_dir: str | os.PathLike[str],
        *,
        backend: str | None = None,
        syscalls: Syscalls | None = None,
        registry: Registry | None = None,
        sweep: bool = True,
        progress: ProgressCallback | None = None,
    ) -> None:
        if syscalls is None:
            syscalls = LinuxSyscalls(progress=progress)
        elif not isinstance(syscalls, Syscalls):
            raise RootFSError(
                ImplErrorId.ErrNilSyscallFS, f"{syscalls!r} does not implement rootfs_core.syscalls.Syscalls"
            )
        self.syscalls = syscalls
        self.base_dir = basedir.check(os.fspath(rw_base_dir))
        self._store = Store(self.base_dir)
        self._store.check_trusted()
        self._forced = forced_backend(backend)
        self._registry = registry
        cache = ProbeCache() if isinstance(syscalls, LinuxSyscalls) else None
        self._prober = Prober(self._run_probe, cache, self.base_dir)
        self._private = False  # whether the base directory was made a private mount
        self._locations: dict[str, tuple[int, tuple[str, str]]] = {}
        if sweep and self._store.initialised:
            sweeping.sweep_quietly(self)

    def __repr__(self) -> str:
        forced = f", backend={self._forced!r}" if self._forced else ""
        return f"RootFS({self.base_dir!r}{forced})"

    # ------------------------------------------------------------ public API
    def generate(
        self, prototype: str | os.PathLike[str], *layers: str | os.PathLike[str], **options: object
    ) -> str:
        """Make a new root showing ``prototype``, with any further ``layers``
        over it (bottom first, as in an image's layer list; a layer may hold
        overlay-format whiteouts and opaque directories); writable unless
        ``read_only=True`` (the one option of the core's own; the others are
        the backend's). Return its path. Without a forced backend, the
        highest-priority supported backend that can serve the request is
        used; a forced one that cannot is refused before anything is made."""
        read_only = bool(options.pop("read_only", False))
        stack = [
            self._check_prototype(self._stored_layer(os.fspath(layer))) for layer in (prototype, *layers)
        ]
        name = self.selected_backend(layers=len(stack), read_only=read_only)
        info = self._get_registry().get(name).info
        # The configuration file's [options.NAME] table, under the caller's own.
        options = {**default_options(name, info.options if info else {}), **options}
        return self._build(name, stack, read_only, self._check_options(name, options))

    def remove(self, root_or_id: str | os.PathLike[str], *, missing_ok: bool = False) -> bool:
        """Remove a root this base directory generated (by path or id).

        Refuses any other path and touches nothing then. A root that does
        not exist (never made, or removed already) is ``ErrNoSuchRoot``,
        unless ``missing_ok``; one whose removal was interrupted is found and
        finished. Returns True once everything is gone; False if the root
        was unmounted but its data kept, because copies of its mounts live
        on in other mount namespaces (it is listed as ``removing``, and
        ``gc`` or another remove finishes it once they are gone).
        """
        text = os.fspath(root_or_id)
        if not self._store.initialised and os.listdir(self.base_dir):
            raise RootFSError(
                ErrorId.ErrNotBaseDir,
                f"{self.base_dir} is not a base directory rootfs has used (no {self._store.state_dir}): "
                "nothing was touched",
            )
        instance_id = self._instance_id(text)
        if not self._exists(instance_id):
            if missing_ok:
                return True
            raise RootFSError(
                ErrorId.ErrNoSuchRoot,
                f"no instance {text!r} in {self.base_dir} (never generated, or removed already)",
            )
        with self._store.claim(instance_id) as claim:
            try:
                record = self._store.read(instance_id)
            except RootFSError as damaged:
                # Damaged (a power loss cut it short) or not to be trusted:
                # its journal is unusable, so the instance is taken apart by
                # what is really there, after the same busy checks.
                log.warning("%s; taking the instance apart by what is mounted and on disk", damaged)
                return sweeping.take_apart_damaged(self, instance_id, claim)
            if record is None:  # removed meanwhile by someone else
                claim.finish()
                if missing_ok:
                    return True
                raise RootFSError(ErrorId.ErrNoSuchRoot, f"instance {instance_id} was removed meanwhile")
            registry = self._get_registry()
            if record.backend not in registry.backends or registry.backends[record.backend].error:
                raise RootFSError(
                    ErrorId.ErrUnknownBackend,
                    f"{record.root} was made by backend {record.backend!r}, which is not installed "
                    f"(or broken) now; reinstall it to remove this root",
                )
            if not self._take_apart(record, claim, was_ready=True):
                return False
            claim.finish()
        return True

    def _exists(self, instance_id: str) -> bool:
        """Whether anything of the instance is left: a record (possibly of an
        interrupted removal), or a marker."""
        return os.path.lexists(self._store.record_path(instance_id)) or self._store.is_incomplete(instance_id)

    @contextlib.contextmanager
    def generated(
        self, prototype: str | os.PathLike[str], *layers: str | os.PathLike[str], **options: object
    ) -> Iterator[str]:
        """``with rfs.generated(prototype) as root:`` removes the root on exit."""
        root = self.generate(prototype, *layers, **options)
        try:
            yield root
        finally:
            self.remove(root)

    def instance(self, root_or_id: str | os.PathLike[str]) -> Instance | None:
        """The instance of that root or id, or None if there is none."""
        instance_id = self._instance_id(os.fspath(root_or_id))
        record = self._store.read(instance_id)
        return None if record is None else self._describe(record)

    def instances(self) -> list[Instance]:
        """Every instance with a record, oldest first."""
        found = []
        for instance_id in self._store.ids():
            try:
                record = self._store.read(instance_id)
            except RootFSError as exc:
                log.warning("%s (`rootfs remove %s` takes it apart)", exc, instance_id)
                root = self._store.root_of(instance_id)
                found.append(Instance(instance_id, root, "", "", State.INCOMPLETE, 0.0, {}))
                continue
            if record is None:
                continue  # removed meanwhile
            described = self._describe(record)
            if described.state in (State.READY, State.UNMOUNTED) and not os.path.lexists(
                self._store.record_path(instance_id)
            ):
                continue  # finished and removed between the record's read and the marker's look
            found.append(described)
        return sorted(found, key=lambda i: (i.created, i.id))

    def _describe(self, record: Record) -> Instance:
        if record.removing:
            state = State.REMOVING
        elif self._store.is_incomplete(record.id):
            state = State.INCOMPLETE
        else:
            try:
                state = State.READY if self.syscalls.is_mountpoint(record.root) else State.UNMOUNTED
            except OSError:
                state = State.UNMOUNTED
            if state == State.UNMOUNTED:
                # A remove may have claimed and unmounted it since the marker
                # was looked at: "unmounted" is only for mounts gone by
                # themselves (a reboot), so look again.
                fresh = self._store.read(record.id)
                if fresh is not None and fresh.removing:
                    state = State.REMOVING
                elif self._store.is_incomplete(record.id):
                    state = State.INCOMPLETE
        return Instance(
            record.id,
            record.root,
            record.backend,
            record.prototype,
            state,
            record.created,
            dict(record.options),
            list(record.layers),
            record.read_only,
        )

    def usage(self, root_or_id: str | os.PathLike[str]) -> Usage:
        """Bytes (allocated) and inodes of the instance's writable layer:
        what was written in the root (a fresh quilt root's are its writable
        copies). An instance whose record names no layer directory (one made
        before they were marked) counts its disposable directories but
        overlay's work directory."""
        text = os.fspath(root_or_id)
        record = self._store.read(self._instance_id(text))
        if record is None:
            raise RootFSError(ErrorId.ErrNoSuchRoot, f"no instance {text!r} in {self.base_dir}")
        if record.read_only:
            return Usage(record.id, 0, 0)  # a view has no writable layer
        trees = [step for step in record.steps if step.op == Op.TREE]
        layers = [step.path for step in trees if step.detail == "layer"] or [
            step.path for step in trees if os.path.basename(step.path) != "work"
        ]
        size, inodes = measure(layers)
        return Usage(record.id, size, inodes)

    def gc(self, *, dry_run: bool = False) -> GcReport:
        """Clean up after crashes; with ``dry_run`` only say what would go.

        Takes apart incomplete instances whose process died (live ones are
        left alone), then unmounts mounts below the base directory that no
        record explains and deletes instance directories that have no record.
        Ready instances are never touched. One instance that cannot be
        cleaned up is reported in ``failed`` and the others are still done.
        Refuses (``ErrNotBaseDir``) a directory rootfs never initialised
        that is not empty: its contents are not ours to judge.
        """
        return sweeping.gc(self, dry_run=dry_run)

    def mount(self, root_or_id: str | os.PathLike[str]) -> str:
        """Mount again an instance whose mounts are gone (after a reboot:
        ``unmounted``), from its journal, keeping its writable layer; return
        its root. One whose writable layer lived on a tmpfs of its own
        (overlayfs's ``size=``) lost it in the reboot: ``ErrLayerLost``, and
        ``remove`` still works. A mounted instance is left as it is."""
        text = os.fspath(root_or_id)
        instance_id = self._instance_id(text)
        record = self._store.read(instance_id)
        if record is None:
            raise RootFSError(ErrorId.ErrNoSuchRoot, f"no instance {text!r} in {self.base_dir}")
        state = self._describe(record).state
        if state == State.READY:
            return record.root
        if state != State.UNMOUNTED:
            raise RootFSError(
                ErrorId.ErrRootBusy, f"{record.root} is {state}: only an unmounted one is mounted again"
            )
        registry = self._get_registry()
        if record.backend not in registry.backends or registry.backends[record.backend].error:
            raise RootFSError(
                ErrorId.ErrUnknownBackend, f"backend {record.backend!r} is not installed (or broken)"
            )
        if not self._private:
            basedir.make_private(self.base_dir, self.syscalls)
            self._private = True
        with self._store.claim(instance_id) as claim:
            self._store.mark_remounting(record)
            ctx = BuildContext(record, self.syscalls, self._store, replay=True)
            try:
                registry.generate(record.backend, ctx)
                if not self.syscalls.is_mountpoint(record.root):
                    raise RootFSError(
                        ErrorId.ErrBackendFailed, f"backend {record.backend!r} did not mount {record.root}"
                    )
            except BaseException as exc:
                for target in reversed(ctx.remounted):
                    try:
                        teardown.unmount(target, ErrorId.ErrUnmountSubdir, self.syscalls)
                    except RootFSError as cleanup:
                        log.error("could not undo the mount of %s: %s", target, cleanup)
                record.remounting = False
                self._store.write(record)
                claim.finish()
                if isinstance(exc, RootFSError) or not isinstance(exc, Exception):
                    raise
                raise _as_rootfs_error(exc, record.backend) from exc
            record.remounting = False
            self._store.write(record)
            claim.finish()
        log.info("mounted %s again", record.root)
        return record.root

    # ---------------------------------------------------- layers (commit.py, layerstore.py)
    def commit(
        self, root_or_id: str | os.PathLike[str], dest: str | os.PathLike[str] | None = None
    ) -> CommitResult:
        """Take the instance apart and leave what was written in it as a
        portable layer in overlay's format, ready for ``generate(BASE,
        LAYER)``: at ``dest`` (which must not exist; its parent must; not
        inside the base directory or any layer), or in this base
        directory's layer store, under a new id. A busy root is refused
        (``ErrRootBusy``) with nothing touched. See ``rootfs_core.commit``."""
        from rootfs_core import commit

        return commit.run(self, os.fspath(root_or_id), None if dest is None else os.fspath(dest))

    def layers(self) -> list[Layer]:
        """The stored layers, oldest first, with the instances using each."""
        from rootfs_core import layerstore

        return layerstore.list_layers(self)

    def remove_layer(self, layer_id: str) -> None:
        """Delete a stored layer no instance uses (``ErrLayerInUse`` else,
        ``ErrNoSuchLayer`` if there is none)."""
        from rootfs_core import layerstore

        layerstore.remove_layer(self, layer_id)

    def _stored_layer(self, text: str) -> str:
        """A stored layer's path for its id (an existing path of that name
        wins); anything else as it is."""
        if os.path.lexists(text):
            return text
        return LayerStore(self.base_dir).resolve(text) or text

    def backends(self) -> list[BackendStatus]:
        """Every discovered backend (broken ones too), probed, best first."""
        registry = self._get_registry()
        try:
            selected: str | None = self.selected_backend()
        except RootFSError:
            selected = None
        statuses = []
        for backend in registry.by_priority():
            probe = self.probe(backend.name)
            statuses.append(
                BackendStatus(
                    backend.name,
                    backend.info.priority if backend.info else None,
                    probe.supported,
                    probe.reason,
                    backend.name == selected,
                    backend.target,
                )
            )
        for backend in sorted(registry.backends.values(), key=lambda b: b.name):
            if backend.error is not None:
                statuses.append(
                    BackendStatus(backend.name, None, False, backend.error, False, backend.target)
                )
        return statuses

    def selected_backend(self, *, layers: int = 1, read_only: bool = False) -> str:
        """The backend generate will use for a root of ``layers`` layers
        (read-only if asked), after probing it (``selection.choose``)."""
        registry = self._get_registry()
        forced = (self._forced, registry.get(self._forced).info) if self._forced else None
        return choose(
            [(b.name, b.info) for b in registry.by_priority()],
            [(b.name, b.error) for b in registry.backends.values() if b.error],
            self.probe,
            forced=forced,
            layers=layers,
            read_only=read_only,
        )

    def probe(self, name: str) -> Probe:
        """Whether backend ``name`` works on this host for this base directory."""
        backend = self._get_registry().get(name)
        return self._prober.verdict(name, backend.target, backend.version)

    # ---------------------------------------------------------- the lifecycle
    def _build(self, name: str, layers: list[str], read_only: bool, options: dict[str, str]) -> str:
        with self._instance(name, layers, options, keep=True, read_only=read_only) as ctx:
            started = time.monotonic()
            self._get_registry().generate(name, ctx)
            if not self.syscalls.is_mountpoint(ctx.root):
                raise RootFSError(
                    ErrorId.ErrBackendFailed, f"backend {name!r} did not mount the root {ctx.root}"
                )
        log.info("generated %s with %s in %.3fs", ctx.root, name, time.monotonic() - started)
        return ctx.root

    def _run_probe(self, name: str) -> Probe:
        """Run the backend's probe in a throw-away instance with a tiny
        prototype of its own; everything it did is undone afterwards."""
        try:
            with self._instance(name, [], {}, keep=False) as ctx:
                proto = ctx.scratch_dir("prototype")
                for relative, content in PROBE_PROTOTYPE.items():
                    os.makedirs(os.path.dirname(os.path.join(proto, relative)), exist_ok=True)
                    with open(os.path.join(proto, relative), "wb") as fh:
                        fh.write(content)
                ctx.prototype = proto
                ctx.layers = [proto]
                verdict = self._get_registry().probe(name, ctx)
        except RootFSError as exc:
            return Probe.no(str(exc))
        if not isinstance(verdict, Probe):
            return Probe.no(f"probe of {name!r} returned {verdict!r}, not a Probe")
        return verdict

    @contextlib.contextmanager
    def _instance(
        self, name: str, layers: list[str], options: dict[str, str], *, keep: bool, read_only: bool = False
    ) -> Iterator[BuildContext]:
        """A journaled instance: taken apart if the body fails (or if not
        ``keep``), marked ready otherwise."""
        store = self._store
        if not self._private:
            basedir.make_private(self.base_dir, self.syscalls)
            self._private = True
        instance_id = store.new_id()
        prototype = layers[0] if layers else ""
        record = Record(
            instance_id,
            name,
            prototype,
            store.root_of(instance_id),
            time.time(),
            options,
            layers=list(layers),
            read_only=read_only,
        )
        with store.claim_new(record) as claim:
            try:
                ctx = BuildContext(record, self.syscalls, store)
                make_instance_dirs(ctx)
                yield ctx
            except BaseException as exc:
                # An interrupt is undone like an error, then goes on as an interrupt.
                error = _as_rootfs_error(exc, name) if isinstance(exc, Exception) else None
                try:
                    if self._take_apart(record, claim, was_ready=False):
                        claim.finish()
                except RootFSError as cleanup:
                    if error is None:
                        log.error("could not undo the interrupted generate: %s (run `rootfs gc`)", cleanup)
                    else:
                        error.cleanup_errors.append(cleanup)
                if error is None or error is exc:
                    raise
                raise error from exc
            if keep or self._take_apart(record, claim, was_ready=False):
                claim.finish()

    def _take_apart(self, record: Record, claim: Claim, *, was_ready: bool) -> bool:
        """The teardown's phases (see ``teardown``) around the backend's
        remove hook, then the record dropped; return False (the record kept,
        ``removing``) if the data must wait for copies of the mounts in other
        namespaces to go. On failure the record keeps what is left and the
        instance stays ``removing``; a ready one refused before anything was
        touched (busy) stays ready."""
        instance_dir = self._store.instance_dir(record.id)
        try:
            teardown.check(record.steps, instance_dir)
            signature = teardown.signature(instance_dir, record.steps, record.prototype, self.syscalls)
            before = teardown.refuse_if_busy(record.steps, signature, self.syscalls)
        except BaseException:
            if was_ready and not record.removing:
                claim.finish()  # nothing was touched: it is as ready as before
            raise
        began = record.removing
        steps_before = len(record.steps)
        try:
            if was_ready:
                self._store.mark_removing(record)
            if record.steps:
                backend = self._get_registry().backends.get(record.backend)
                if backend is not None and backend.error is None:
                    self._get_registry().remove(record.backend, RemoveContext(record, self.syscalls))
            journal = list(record.steps)
            teardown.unmount_all(record.steps, self.syscalls)
            copies = teardown.held_elsewhere(signature, before) if record.steps else None
            if copies:
                # The journal keeps its mounts (unmounted here, undone again
                # harmlessly), so the next look finds the copies where they are.
                record.steps[:] = journal
                record.removing = True
                self._store.write(record)
                log.warning(
                    "%s is unmounted, but copies of its mounts live on in other mount namespaces: %s. Its "
                    "data is kept until they are gone (listed as 'removing'; `rootfs gc` finishes it)",
                    record.root,
                    copies.describe(),
                )
                return False
            teardown.delete_all(record.steps, self.syscalls)
        except BaseException as exc:
            untouched = was_ready and not began and len(record.steps) == steps_before
            if untouched:
                record.removing = False  # the first undo failed: nothing was touched
            self._store.write(record)
            if untouched:
                claim.finish()  # only once the record says so: a kill in between leaves it marked
            if isinstance(exc, RootFSError) or not isinstance(exc, Exception):
                raise
            raise _as_rootfs_error(exc, record.backend) from exc
        self._store.delete(record.id)
        return True

    # ------------------------------------------------------------ validation
    def _get_registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry.discover()
        return self._registry

    def _check_prototype(self, prototype: str) -> str:
        path = os.path.realpath(prototype)
        try:
            st = os.stat(path)
        except OSError as exc:
            raise RootFSError(
                ErrorId.ErrPrototypeMissing, f"prototype {prototype!r} not found", cause=exc
            ) from exc
        if not stat.S_ISDIR(st.st_mode):
            raise RootFSError(ErrorId.ErrPrototypeNotDir, f"prototype {prototype!r} is not a directory")
        if not os.access(path, os.R_OK | os.X_OK):
            raise RootFSError(ErrorId.ErrPrototypeNotDir, f"prototype {prototype!r} is not readable")
        if self._overlaps(path, st) and LayerStore(self.base_dir).id_of(path) is None:
            raise RootFSError(
                ErrorId.ErrPrototypeOverlapsBase,
                f"prototype {path} and base directory {self.base_dir} overlap (one contains the other)",
            )
        return path

    def _overlaps(self, prototype: str, st: os.stat_result) -> bool:
        """Whether one of prototype and base directory contains the other,
        by path and, on one filesystem, by where each really is in it (a
        bind mount makes a second path for the same directory)."""
        if paths.is_within(prototype, self.base_dir) or paths.is_within(self.base_dir, prototype):
            return True
        if st.st_dev != os.stat(self.base_dir).st_dev:
            return False
        try:
            (dev, proto_at), (base_dev, base_at) = self._location(prototype), self._location(self.base_dir)
        except OSError:
            return False
        return dev == base_dev and (paths.is_within(proto_at, base_at) or paths.is_within(base_at, proto_at))

    def _location(self, path: str) -> tuple[str, str]:
        """``mounttable.location``, remembered per path and mount (it reads
        the mount table, which grows with every live instance)."""
        from rootfs_core.syscalls import mount_info

        mnt_id = mount_info(path)[0]
        known = self._locations.get(path)
        if known is None or known[0] != mnt_id:
            known = (mnt_id, mounttable.location(path))
            self._locations[path] = known
        return known[1]

    def _check_options(self, name: str, options: dict[str, object]) -> dict[str, str]:
        info = self._get_registry().get(name).info
        accepted = info.options if info else {}
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            hint = ", ".join(sorted(accepted)) or "none"
            raise RootFSError(
                ErrorId.ErrBadOption,
                f"backend {name!r} does not accept option(s) {', '.join(unknown)} (it accepts: {hint})",
            )
        return {key: str(value) for key, value in options.items() if value is not None}

    def _instance_id(self, root_or_id: str) -> str:
        if is_instance_id(root_or_id):
            return root_or_id
        # A root named by its own path (absolute, normalised) needs no
        # resolving: the base directory is a real path, and below it only
        # rootfs makes entries (whatever the record then names is checked
        # before anything is touched).
        named = os.path.isabs(root_or_id) and os.path.normpath(root_or_id) == root_or_id
        instance_id = self._store.id_of_root(root_or_id) if named else None
        if instance_id is None:
            instance_id = self._store.id_of_root(os.path.realpath(root_or_id))
        if instance_id is None:
            raise RootFSError(
                ErrorId.ErrNotOurRoot,
                f"{root_or_id!r} is not a root generated in {self.base_dir}; nothing was touched",
            )
        return instance_id


def _as_rootfs_error(exc: Exception, backend: str) -> RootFSError:
    """Any exception of a backend as a ``RootFSError`` (a bug in it, or in
    what it called, is still reported with an id)."""
    if isinstance(exc, RootFSError):
        return exc
    return RootFSError(ErrorId.ErrBackendFailed, f"backend {backend!r} raised {exc!r}", cause=exc)
