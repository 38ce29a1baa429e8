"""A generate killed with SIGKILL half-way is swept by ``gc`` (and by the
next RootFS opened on the base directory); live and finished instances are
left alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from rootfs_core import GcReport, RootFS
from rootfs_core.registry import Registry
from rootfs_core.store import Store
from rootfs_core.testing.checks import instance_mounts, mounts_below

SCRIPT = """
import sys
from rootfs_core import RootFS
from rootfs_core import GcReport
RootFS(sys.argv[1], backend="crashy").generate(sys.argv[2], crash_after=sys.argv[3])
"""


def _killed_generate(base_dir: str, prototype: str, crash_after: int) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, base_dir, prototype, str(crash_after)], check=False)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("crash_after", [1, 2])
def test_gc_sweeps_a_killed_generate(
    base_dir: str, registry: Registry, prototype: str, discovery_path: str, crash_after: int
) -> None:
    ready = RootFS(base_dir, registry=registry, backend="bindtest").generate(prototype)
    _killed_generate(base_dir, prototype, crash_after)
    assert _states_without_sweep(base_dir) == {"bindtest": "ready", "crashy": "incomplete"}
    assert len(instance_mounts(base_dir)) == 3 + crash_after
    rfs = RootFS(base_dir, registry=registry)  # opening sweeps
    assert [i.root for i in rfs.instances()] == [ready]
    assert instance_mounts(base_dir) == [ready, ready + "/etc", ready + "/tmp"]
    with open(os.path.join(ready, "etc/hostname")) as fh:  # the finished one still works
        assert fh.read() == "prototype\n"
    assert rfs.gc() == GcReport([], [], [])
    rfs.remove(ready)


def _states_without_sweep(base_dir: str) -> dict[str, str]:
    """Backend -> state, read from the store directly (opening a RootFS would sweep)."""
    store = Store(base_dir)
    states = {}
    for instance_id in store.ids():
        record = store.read(instance_id)
        assert record is not None
        states[record.backend] = "incomplete" if store.is_incomplete(instance_id) else "ready"
    return states


def test_gc_leaves_an_instance_a_live_process_is_building(
    base_dir: str, registry: Registry, prototype: str
) -> None:
    rfs = RootFS(base_dir, registry=registry, backend="bindtest")
    root = rfs.generate(prototype)
    instance_id = os.path.basename(os.path.dirname(root))
    with Store(base_dir).claim(instance_id):  # as a remove in progress would
        assert RootFS(base_dir, registry=registry).gc().instances == []
        assert os.path.isdir(root)
    rfs.remove(root)


def test_gc_unmounts_and_deletes_what_no_record_explains(
    base_dir: str, registry: Registry, prototype: str
) -> None:
    rfs = RootFS(base_dir, registry=registry, backend="bindtest")
    kept = rfs.generate(prototype)
    lost = rfs.generate(prototype)
    lost_id = os.path.basename(os.path.dirname(lost))
    os.unlink(os.path.join(base_dir, ".rootfs/records", lost_id + ".json"))  # as if the record were lost
    stray = os.path.join(base_dir, "0123456789ab")  # an instance dir with nothing at all
    os.makedirs(os.path.join(stray, "root"))
    not_ours = os.path.join(base_dir, "not-an-instance")
    os.mkdir(not_ours)

    dry = rfs.gc(dry_run=True)
    assert dry.unmounted == [lost, lost + "/etc", lost + "/tmp"]
    assert dry.orphans == [stray, os.path.dirname(lost)] or dry.orphans == [os.path.dirname(lost), stray]
    assert mounts_below(lost)  # a dry run touches nothing

    report = rfs.gc()
    assert report.instances == [] and sorted(report.unmounted) == sorted(dry.unmounted)
    assert (
        mounts_below(lost) == [] and not os.path.exists(os.path.dirname(lost)) and not os.path.exists(stray)
    )
    assert os.path.isdir(not_ours)  # not named like an instance: not ours to delete
    assert [i.root for i in rfs.instances()] == [kept] and mounts_below(kept)
    os.rmdir(not_ours)
    rfs.remove(kept)


def test_a_torn_last_journal_line_is_ignored_and_swept(
    base_dir: str, registry: Registry, prototype: str
) -> None:
    """A process killed in the middle of appending a step leaves half a line:
    that step was never taken, so the record reads without it."""
    store = Store(base_dir)
    rfs = RootFS(base_dir, registry=registry, backend="bindtest")
    root = rfs.generate(prototype)
    instance_id = os.path.basename(os.path.dirname(root))
    path = os.path.join(base_dir, ".rootfs/records", instance_id + ".json")
    with open(path, "a") as fh:
        fh.write('["mount", "/etc", "ErrUnm')
    record = store.read(instance_id)
    assert record is not None and all(step.path != "/etc" for step in record.steps)
    with open(path, "a") as fh:
        fh.write('\n["dir", "/x", "ErrRemoveMountDir"]\n')  # damage in the middle is an error
    from rootfs_core import ErrorId, RootFSError

    with pytest.raises(RootFSError) as info:
        store.read(instance_id)
    assert info.value.error_id is ErrorId.ErrRecord
    store.write(record)  # mend it, as an operator would
    rfs.remove(root)


def test_a_damaged_record_of_a_ready_instance_is_listed_and_removable(
    base_dir: str, registry: Registry, prototype: str
) -> None:
    """A power loss can cut a record short. The instance is not lost track
    of: list shows it incomplete (with a warning), gc leaves it alone (it is
    not a crash in progress), and remove takes apart what is really there."""
    rfs = RootFS(base_dir, registry=registry, backend="bindtest")
    root = rfs.generate(prototype)
    instance_id = os.path.basename(os.path.dirname(root))
    with open(os.path.join(base_dir, ".rootfs/records", instance_id + ".json"), "w") as fh:
        fh.write('{"id": "')
    (listed,) = rfs.instances()
    assert (listed.id, listed.root, listed.state) == (instance_id, root, "incomplete")
    assert rfs.gc() == GcReport([], [], [])
    assert mounts_below(root)
    rfs.remove(root)
    assert rfs.instances() == [] and instance_mounts(base_dir) == []
