"""Cleaning up after crashes: ``RootFS.gc`` and the sweep on opening.

The lifecycle (``core``) makes and removes one instance at a time, under
its claim, by its journal. Sweeping finds what crashes left instead:
incomplete instances whose owner died, a record too damaged to read,
a commit or a mount-again killed half-way, directories and mounts no record
explains, and work directories of dead commits in the layer store. Each is
handed back to the lifecycle's teardown (``RootFS._take_apart``) when its
journal can be trusted, or else taken apart by what is really there, after
the same busy checks as a remove.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING

from rootfs_core import log, mounttable, paths, teardown
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.layerstore import LayerStore
from rootfs_core.store import MOUNT_OPS, Claim, Op, Step, is_instance_id

if TYPE_CHECKING:
    from rootfs_core.core import RootFS


@dataclasses.dataclass
class GcReport:
    """What ``RootFS.gc`` cleaned up (or, in a dry run, would)."""

    instances: list[str]  # ids of incomplete instances taken apart
    unmounted: list[str]  # mount points no record explained
    orphans: list[str]  # instance directories with no record, deleted
    # ids unmounted but kept: copies of their mounts live in other namespaces
    waiting: list[str] = dataclasses.field(default_factory=list)
    # id or path -> why it could not be cleaned up (gc goes on with the rest)
    failed: dict[str, str] = dataclasses.field(default_factory=dict)


def gc(rfs: RootFS, *, dry_run: bool = False) -> GcReport:
    """``RootFS.gc``: see there."""
    store = rfs._store
    if not store.initialised:
        if os.listdir(rfs.base_dir):
            raise RootFSError(
                ErrorId.ErrNotBaseDir,
                f"{rfs.base_dir} is not a base directory rootfs has used (no {store.state_dir}): "
                "nothing was touched",
            )
        return GcReport([], [], [])
    report = GcReport([], [], [])
    _sweep_incomplete(rfs, report, dry_run=dry_run)
    # Dirs and mounts are listed before the records are read: an instance
    # whose record is written after that (a generate starting now) cannot
    # be in these lists, because a record is written before its directory.
    names = sorted(os.listdir(rfs.base_dir))
    mounted = mounttable.mounts_below(rfs.base_dir)
    recorded = set(store.ids())
    for name in names:
        if not is_instance_id(name) or name in recorded:
            continue
        instance_dir = store.instance_dir(name)
        if dry_run:
            report.unmounted += [p for p in mounted if paths.is_within(p, instance_dir)]
            report.orphans.append(instance_dir)
            continue
        try:
            _without_record(rfs, instance_dir, mounted, report)
        except RootFSError as exc:
            report.failed[instance_dir] = str(exc)
    if not dry_run:
        store.sweep_temporaries()
    _sweep_layer_store(rfs, report, dry_run=dry_run)
    return report


def sweep_quietly(rfs: RootFS) -> None:
    """Sweep crashed instances when opening; cheap when there are none."""
    if next(rfs._store.incomplete_ids(), None) is None:
        return
    report = GcReport([], [], [])
    _sweep_incomplete(rfs, report)
    for instance_id, why in report.failed.items():
        log.warning("could not clean up interrupted instance %s: %s (`rootfs gc` retries)", instance_id, why)
    if report.instances:
        log.info("cleaned up interrupted instance(s): %s", ", ".join(report.instances))


def take_apart_damaged(rfs: RootFS, instance_id: str, claim: Claim) -> bool:
    """Take apart a claimed instance whose record cannot be used (a power
    loss cut it short, or it is not to be trusted): its journal is lost, so
    by what is mounted and on disk, after the same busy checks as a remove.
    False if its data must wait for copies of its mounts elsewhere to go."""
    report = GcReport([], [], [])
    instance_dir = rfs._store.instance_dir(instance_id)
    _without_record(rfs, instance_dir, mounttable.mounts_below(instance_dir), report)
    if report.waiting:
        return False
    rfs._store.delete(instance_id)
    claim.finish()
    return True


def _without_record(rfs: RootFS, instance_dir: str, mounted: list[str], report: GcReport) -> None:
    """Take apart an instance directory no usable journal describes, by
    what is really there: the same busy checks as a remove, then unmount
    whatever is mounted in it, deepest first, then delete it (never
    across a mount), unless copies of its mounts live on elsewhere.
    Only what was really there is reported: a remove finishing meanwhile
    may have taken it away."""
    points = [p for p in mounted if paths.is_within(p, instance_dir)]
    steps = [Step(Op.MOUNT, p, ErrorId.ErrUnmountSubdir) for p in points]
    signature = teardown.signature(instance_dir, steps, "", rfs.syscalls)
    before = teardown.refuse_if_busy(steps, signature, rfs.syscalls)
    for point in reversed(points):
        if teardown.unmount(point, ErrorId.ErrUnmountSubdir, rfs.syscalls):
            report.unmounted.append(point)
    if teardown.held_elsewhere(signature, before):
        report.waiting.append(instance_dir)
        return
    try:
        rfs.syscalls.remove_tree(instance_dir)
        report.orphans.append(instance_dir)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise RootFSError(ErrorId.ErrRemoveMountDir, f"cannot delete {instance_dir}", cause=exc) from exc


def _sweep_incomplete(rfs: RootFS, report: GcReport, *, dry_run: bool = False) -> None:
    """Take apart the incomplete instances whose owner is gone (live ones,
    and their helpers, hold the marker's lock); one that fails is
    reported in ``report.failed`` and the others are still swept."""
    for instance_id in list(rfs._store.incomplete_ids()):
        claim = rfs._store.claim_abandoned(instance_id)
        if claim is None:
            continue
        with claim:
            if dry_run:
                report.instances.append(instance_id)
                continue
            try:
                if _sweep_one(rfs, instance_id, claim):
                    report.instances.append(instance_id)
                else:
                    report.waiting.append(instance_id)
            except RootFSError as exc:
                report.failed[instance_id] = str(exc)


def _sweep_one(rfs: RootFS, instance_id: str, claim: Claim) -> bool:
    """Take apart one abandoned instance; False if its data must wait for
    copies of its mounts in other namespaces to go."""
    store = rfs._store
    try:
        record = store.read(instance_id)
    except RootFSError:
        return take_apart_damaged(rfs, instance_id, claim)
    if record is not None and record.remounting:
        # A mount again that was killed: undo its mounts, keep the data.
        steps = [step for step in record.steps if step.op in MOUNT_OPS]
        teardown.unmount_all(steps, rfs.syscalls)
        record.remounting = False
        store.write(record)
        claim.finish()
        return True
    if record is not None and record.committing and not record.committed:
        # A commit killed before its layer was published: the data is
        # the instance's still (perhaps half made portable): keep it,
        # unmounted, for the user to remove or commit again.
        record.committing = False
        store.write(record)
        claim.finish()
        log.warning("kept %s, which a killed commit left unmounted with its data", record.root)
        return True
    if record is not None and not rfs._take_apart(record, claim, was_ready=False):
        return False
    claim.finish()
    return True


def _sweep_layer_store(rfs: RootFS, report: GcReport, *, dry_run: bool) -> None:
    """Work directories of dead commits in the layer store (``orphans``)."""
    for path in LayerStore(rfs.base_dir).stray_temporaries():
        if not dry_run:
            try:
                rfs.syscalls.remove_tree(path) if os.path.isdir(path) else os.unlink(path)
            except OSError as exc:
                report.failed[path] = str(exc)
                continue
        report.orphans.append(path)
