"""``RootFS``: the instance lifecycle, written once for every backend.

generate: validate -> select a backend -> claim an id (marked incomplete) ->
journal and create the instance dirs -> the backend's mount plan -> confirm
the root is mounted -> mark ready. Any failure, including an interrupt,
undoes the journal in reverse, so a failed generate leaves nothing: no
directory, no mount, no record (the seed could leave directories).

remove: refuse what this base dir did not make -> claim -> the backend's
optional remove hook -> undo the journal -> drop the record. If undoing
stops half-way (a busy root), the record keeps exactly what is left, and a
later remove or ``gc`` finishes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import stat
import time
from collections.abc import Iterator

from rootfs_core import mounttable, paths, teardown
from rootfs_core.context import BuildContext, RemoveContext
from rootfs_core.errors import ErrorId, ImplErrorId, RootFSError
from rootfs_core.hookspecs import PROBE_PROTOTYPE, Probe
from rootfs_core.registry import Registry
from rootfs_core.selection import ProbeCache, forced_backend
from rootfs_core.store import Claim, Record, Store, is_instance_id
from rootfs_core.syscalls import LinuxSyscalls, Syscalls

log = logging.getLogger("rootfs")


@dataclasses.dataclass(frozen=True)
class Instance:
    """A generated root as ``RootFS.instances()`` reports it."""

    id: str
    root: str
    backend: str
    prototype: str
    state: str  # "ready", or "incomplete" while being made or removed, or after a crash
    created: float
    options: dict[str, str]


@dataclasses.dataclass
class GcReport:
    """What ``RootFS.gc`` cleaned up (or, in a dry run, would)."""

    instances: list[str]  # ids of incomplete instances taken apart
    unmounted: list[str]  # mount points no record explained
    orphans: list[str]  # instance directories with no record, deleted


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
    not change anything).
    """

    def __init__(
        self,
        rw_base_dir: str | os.PathLike[str],
        *,
        backend: str | None = None,
        syscalls: Syscalls | None = None,
        registry: Registry | None = None,
        sweep: bool = True,
    ) -> None:
        if syscalls is None:
            syscalls = LinuxSyscalls()
        elif not isinstance(syscalls, Syscalls):
            raise RootFSError(
                ImplErrorId.ErrNilSyscallFS, f"{syscalls!r} does not implement rootfs_core.syscalls.Syscalls"
            )
        self.syscalls = syscalls
        self.base_dir = _check_base_dir(os.fspath(rw_base_dir))
        self._store = Store(self.base_dir)
        self._forced = forced_backend(backend)
        self._registry = registry
        self._probe_cache = ProbeCache() if isinstance(syscalls, LinuxSyscalls) else None
        self._probes: dict[str, Probe] = {}
        if sweep:
            self._sweep_quietly()

    # ------------------------------------------------------------ public API
    def generate(self, prototype: str | os.PathLike[str], **options: object) -> str:
        """Make a new writable root showing ``prototype``; return its path."""
        proto = self._check_prototype(os.fspath(prototype))
        name = self.selected_backend()
        return self._build(name, proto, self._check_options(name, options))

    def remove(self, root_or_id: str | os.PathLike[str]) -> None:
        """Remove a root this base directory generated (by path or id).

        Refuses any other path and touches nothing then; a root already
        removed is a success.
        """
        instance_id = self._instance_id(os.fspath(root_or_id))
        with self._store.claim(instance_id) as claim:
            try:
                record = self._store.read(instance_id)
            except RootFSError:
                # A record damaged (a power loss cut it short): its journal is
                # lost, so the instance is taken apart by what is really there.
                self._sweep_without_record(
                    self._store.instance_dir(instance_id),
                    mounttable.mounts_below(self._store.instance_dir(instance_id)),
                    GcReport([], [], []),
                )
                self._store.delete(instance_id)
                claim.finish()
                return
            if record is not None:
                registry = self._get_registry()
                if record.backend not in registry.backends or registry.backends[record.backend].error:
                    raise RootFSError(
                        ErrorId.ErrUnknownBackend,
                        f"{record.root} was made by backend {record.backend!r}, which is not installed "
                        f"(or broken) now; reinstall it to remove this root",
                    )
                self._take_apart(record, claim, was_ready=True)
            claim.finish()

    @contextlib.contextmanager
    def generated(self, prototype: str | os.PathLike[str], **options: object) -> Iterator[str]:
        """``with rfs.generated(prototype) as root:`` removes the root on exit."""
        root = self.generate(prototype, **options)
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
                found.append(Instance(instance_id, root, "", "", "incomplete", 0.0, {}))
                continue
            if record is not None:  # else removed meanwhile
                found.append(self._describe(record))
        return sorted(found, key=lambda i: (i.created, i.id))

    def _describe(self, record: Record) -> Instance:
        state = "incomplete" if self._store.is_incomplete(record.id) else "ready"
        return Instance(
            record.id,
            record.root,
            record.backend,
            record.prototype,
            state,
            record.created,
            dict(record.options),
        )

    def gc(self, *, dry_run: bool = False) -> GcReport:
        """Clean up after crashes; with ``dry_run`` only say what would go.

        Takes apart incomplete instances whose process died (live ones are
        left alone), then unmounts mounts below the base directory that no
        record explains and deletes instance directories that have no record.
        Ready instances are never touched.
        """
        report = GcReport(self._sweep_incomplete(dry_run=dry_run), [], [])
        # Dirs and mounts are listed before the records are read: an instance
        # whose record is written after that (a generate starting now) cannot
        # be in these lists, because a record is written before its directory.
        names = sorted(os.listdir(self.base_dir))
        mounted = mounttable.mounts_below(self.base_dir)
        recorded = set(self._store.ids())
        for name in names:
            if not is_instance_id(name) or name in recorded:
                continue
            instance_dir = self._store.instance_dir(name)
            if dry_run:
                report.unmounted += [p for p in mounted if paths.is_within(p, instance_dir)]
                report.orphans.append(instance_dir)
            else:
                self._sweep_without_record(instance_dir, mounted, report)
        if not dry_run:
            self._store.sweep_temporaries()
        return report

    def _sweep_without_record(self, instance_dir: str, mounted: list[str], report: GcReport) -> None:
        """Unmount whatever is mounted in an instance directory no journal
        describes, deepest first, then delete it (never across a mount).
        Only what was really there is reported: a remove finishing meanwhile
        may have taken it away."""
        for point in reversed([p for p in mounted if paths.is_within(p, instance_dir)]):
            if teardown.unmount(point, ErrorId.ErrUnmountSubdir, self.syscalls):
                report.unmounted.append(point)
        try:
            self.syscalls.remove_tree(instance_dir)
            report.orphans.append(instance_dir)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RootFSError(ErrorId.ErrRemoveMountDir, f"cannot delete {instance_dir}", cause=exc) from exc

    def _sweep_incomplete(self, *, dry_run: bool = False) -> list[str]:
        """Take apart the incomplete instances whose owner is gone."""
        swept = []
        for instance_id in list(self._store.incomplete_ids()):
            claim = self._store.claim_abandoned(instance_id)
            if claim is None:
                continue
            with claim:
                swept.append(instance_id)
                if dry_run:
                    continue
                try:
                    record = self._store.read(instance_id)
                except RootFSError:
                    # A record a power loss cut short: its journal is lost, so
                    # the instance is swept as one without a record.
                    report = GcReport([], [], [])
                    self._sweep_without_record(
                        self._store.instance_dir(instance_id), mounttable.mounts_below(self.base_dir), report
                    )
                    self._store.delete(instance_id)
                    claim.finish()
                    continue
                if record is not None:
                    self._take_apart(record, claim, was_ready=False)
                claim.finish()
        return swept

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

    def selected_backend(self) -> str:
        """The backend generate will use, after probing it."""
        registry = self._get_registry()
        if self._forced:
            registry.get(self._forced)
            probe = self.probe(self._forced)
            if not probe.supported:
                raise RootFSError(
                    ErrorId.ErrBackendUnsupported,
                    f"backend {self._forced!r} cannot work here: {probe.reason}",
                )
            return self._forced
        rejected = []
        for backend in registry.by_priority():
            probe = self.probe(backend.name)
            if probe.supported:
                return backend.name
            rejected.append(f"{backend.name}: {probe.reason}")
        rejected += [f"{b.name}: {b.error}" for b in registry.backends.values() if b.error]
        detail = "; ".join(rejected) if rejected else "no backend is installed in the group rootfs.backends"
        raise RootFSError(ErrorId.ErrNoSupportedBackend, f"no supported backend ({detail})")

    def probe(self, name: str) -> Probe:
        """Whether backend ``name`` works on this host for this base directory."""
        if name in self._probes:
            return self._probes[name]
        backend = self._get_registry().get(name)
        verdict = self._probe_cache.get(name, backend.target, self.base_dir) if self._probe_cache else None
        if verdict is None:
            verdict = self._run_probe(name)
            # Only a success is remembered: a failure may be mended at any
            # time (a module loaded, a package installed) and costs little to
            # find again.
            if self._probe_cache and verdict.supported:
                self._probe_cache.put(name, backend.target, self.base_dir, verdict)
        self._probes[name] = verdict
        return verdict

    # ---------------------------------------------------------- the lifecycle
    def _build(self, name: str, prototype: str, options: dict[str, str]) -> str:
        with self._instance(name, prototype, options, keep=True) as ctx:
            started = time.monotonic()
            self._get_registry().call(name, "rootfs_generate", ctx=ctx)
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
            with self._instance(name, "", {}, keep=False) as ctx:
                proto = ctx.scratch_dir("prototype")
                for relative, content in PROBE_PROTOTYPE.items():
                    os.makedirs(os.path.dirname(os.path.join(proto, relative)), exist_ok=True)
                    with open(os.path.join(proto, relative), "wb") as fh:
                        fh.write(content)
                ctx.prototype = proto
                verdict = self._get_registry().call(name, "rootfs_probe", ctx=ctx)
        except RootFSError as exc:
            return Probe.no(str(exc))
        if not isinstance(verdict, Probe):
            return Probe.no(f"probe of {name!r} returned {verdict!r}, not a Probe")
        return verdict

    @contextlib.contextmanager
    def _instance(
        self, name: str, prototype: str, options: dict[str, str], *, keep: bool
    ) -> Iterator[BuildContext]:
        """A journaled instance: taken apart if the body fails (or if not
        ``keep``), marked ready otherwise."""
        store = self._store
        instance_id = store.new_id()
        with store.claim(instance_id) as claim:
            record = Record(instance_id, name, prototype, store.root_of(instance_id), time.time(), options)
            try:
                store.create(record)
                ctx = BuildContext(record, self.syscalls, store)
                ctx.make_instance_dirs()
                yield ctx
            except BaseException as exc:
                # An interrupt is undone like an error, then goes on as an interrupt.
                error = _as_rootfs_error(exc, name) if isinstance(exc, Exception) else None
                try:
                    self._take_apart(record, claim, was_ready=False)
                    claim.finish()
                except RootFSError as cleanup:
                    if error is None:
                        log.error("could not undo the interrupted generate: %s (run `rootfs gc`)", cleanup)
                    else:
                        error.cleanup_errors.append(cleanup)
                if error is None or error is exc:
                    raise
                raise error from exc
            if not keep:
                self._take_apart(record, claim, was_ready=False)
            claim.finish()

    def _take_apart(self, record: Record, claim: Claim, *, was_ready: bool) -> None:
        """The backend's remove hook, then the journal undone, then the record
        dropped. On failure the record keeps what is left and the instance
        stays incomplete; if nothing was undone yet a ready one stays ready."""
        instance_dir = self._store.instance_dir(record.id)
        steps_before = len(record.steps)
        try:
            if record.steps:
                backend = self._get_registry().backends.get(record.backend)
                if backend is not None and backend.error is None:
                    self._get_registry().call(
                        record.backend, "rootfs_remove", ctx=RemoveContext(record, self.syscalls)
                    )
            teardown.undo(record.steps, instance_dir, self.syscalls)
        except BaseException as exc:
            self._store.write(record)
            if was_ready and len(record.steps) == steps_before:
                claim.finish()
            if isinstance(exc, RootFSError) or not isinstance(exc, Exception):
                raise
            raise _as_rootfs_error(exc, record.backend) from exc
        self._store.delete(record.id)

    def _sweep_quietly(self) -> None:
        """Sweep crashed instances when opening; cheap when there are none."""
        if next(self._store.incomplete_ids(), None) is None:
            return
        try:
            swept = self._sweep_incomplete()
        except RootFSError as exc:
            log.warning("could not clean up an interrupted instance: %s (`rootfs gc` retries)", exc)
            return
        if swept:
            log.info("cleaned up interrupted instance(s): %s", ", ".join(swept))

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
        if paths.is_within(path, self.base_dir) or paths.is_within(self.base_dir, path):
            raise RootFSError(
                ErrorId.ErrPrototypeOverlapsBase,
                f"prototype {path} and base directory {self.base_dir} overlap (one contains the other)",
            )
        return path

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


def _check_base_dir(path: str) -> str:
    """The seed's constructor checks, in the seed's order."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise RootFSError(
            ImplErrorId.ErrRwBaseDirMissing, f"base directory {path!r} not found", cause=exc
        ) from exc
    except OSError as exc:
        raise RootFSError(
            ImplErrorId.ErrRwBaseDirMissing, f"base directory {path!r} unusable", cause=exc
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise RootFSError(ImplErrorId.ErrRwBaseDirIsFile, f"base directory {path!r} is not a directory")
    if st.st_mode & 0o700 != 0o700 or not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise RootFSError(
            ImplErrorId.ErrRwBaseDirNotRw,
            f"base directory {path!r} is not readable and writable by its owner",
        )
    return os.path.realpath(path)
