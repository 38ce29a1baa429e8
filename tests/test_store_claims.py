"""One inode per instance: the marker is the record's own file wherever it
can be, the journal is written and read through the claim's descriptor,
and a marker of its own (no record to lock, or an earlier release's) still
works as one."""

from __future__ import annotations

import os
import threading
import time

import pytest

from rootfs_core import ErrorId, GcReport, RootFS
from rootfs_core.registry import Registry
from rootfs_core.store import Op, Record, Step, Store


@pytest.fixture
def rfs(base_dir: str, registry: Registry) -> RootFS:
    return RootFS(base_dir, registry=registry, backend="bindtest")


def _same_file(a: str, b: str) -> bool:
    sa, sb = os.stat(a), os.stat(b)
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _marker(store: Store, instance_id: str) -> str:
    return os.path.join(store.incomplete_dir, instance_id)


def test_a_new_record_is_its_own_marker_and_stays_once_finished(base_dir: str) -> None:
    store = Store(base_dir)  # the state directory is made by the first claim
    instance_id = store.new_id()
    record = Record(instance_id, "none", "/", store.root_of(instance_id), 0.0, {})
    with store.claim_new(record) as claim:
        marker, path = _marker(store, instance_id), store.record_path(instance_id)
        assert _same_file(marker, path)
        store.append(record, Step(Op.DIR, store.instance_dir(instance_id), ErrorId.ErrCreateTempDir))
        assert store.read(instance_id) == record
        assert Store(base_dir).read(instance_id) == record  # by its name, as any other reader
        claim.finish()
        assert not os.path.lexists(marker) and os.path.isfile(path)
    assert Store(base_dir).read(instance_id) == record
    assert Store(base_dir).sweep_temporaries() == []
    store.delete(instance_id)


def test_a_claim_makes_the_record_the_marker_and_waits_for_its_holder(rfs: RootFS, prototype: str) -> None:
    root = rfs.generate(prototype)
    instance_id = os.path.basename(os.path.dirname(root))
    store = Store(rfs.base_dir)
    got: list[float] = []

    def second() -> None:
        with Store(rfs.base_dir).claim(instance_id) as claim:
            got.append(time.monotonic())
            claim.finish()

    with store.claim(instance_id):
        assert _same_file(_marker(store, instance_id), store.record_path(instance_id))
        record = store.read(instance_id)
        assert record is not None
        store.mark_removing(record)
        assert Store(rfs.base_dir).read(instance_id) == record  # appended through the claim, on disk
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(0.2)
        assert got == [] and Store(rfs.base_dir).claim_abandoned(instance_id) is None
        released = time.monotonic()
    waiter.join()
    assert got and got[0] >= released
    rfs.remove(root)


def test_a_record_rewritten_under_a_claim_is_its_journal_from_then_on(rfs: RootFS, prototype: str) -> None:
    root = rfs.generate(prototype)
    instance_id = os.path.basename(os.path.dirname(root))
    store = Store(rfs.base_dir)
    with store.claim(instance_id):
        record = store.read(instance_id)
        assert record is not None
        store.write(record)  # a new file: the marker is still the old one, and still held
        assert not _same_file(_marker(store, instance_id), store.record_path(instance_id))
        store.mark_removing(record)
        assert Store(rfs.base_dir).read(instance_id) == record
        assert Store(rfs.base_dir).claim_abandoned(instance_id) is None
    # Released without finishing: the instance is left marked, and gc (its
    # owner gone) takes it apart through the marker it finds.
    assert rfs.gc() == GcReport([instance_id], [], [])
    assert rfs.instances() == []


def test_an_empty_marker_of_an_earlier_release_is_claimed_and_swept(rfs: RootFS, prototype: str) -> None:
    """What a generate of the previous release killed half-way leaves: an
    empty marker beside the record."""
    root = rfs.generate(prototype)
    instance_id = os.path.basename(os.path.dirname(root))
    store = Store(rfs.base_dir)
    open(_marker(store, instance_id), "x").close()
    assert [i.state for i in rfs.instances()] == ["incomplete"]
    assert rfs.gc() == GcReport([instance_id], [], [])
    assert rfs.instances() == [] and os.listdir(store.incomplete_dir) == []
    assert os.listdir(rfs.base_dir) == [".rootfs"]
