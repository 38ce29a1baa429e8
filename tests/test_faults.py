"""Every changing call of generate and of remove fails in turn; afterwards
nothing is left that should not be, and the prototype is unchanged (checked
by the ``prototype`` fixture)."""

from __future__ import annotations

import os

import pytest

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.registry import Registry
from rootfs_core.testing.checks import instance_mounts
from rootfs_core.testing.faults import FaultySyscalls, probed_rootfs

# bindtest's generate, call by call, and the id a failure there must carry.
GENERATE = [
    ("mkdir", ErrorId.ErrCreateTempDir),  # the instance directory
    ("chmod", ErrorId.ErrCreateTempDir),
    ("mkdir", ErrorId.ErrCreateMountDir),  # the root
    ("chmod", ErrorId.ErrCreateMountDir),
    ("mount", ErrorId.ErrBindMountRoot),  # prototype bound on the root
    ("mount", ErrorId.ErrBindMountRoot),  # ... made private at once
    ("mount", ErrorId.ErrBindMountRoot),  # ... remounted read-only
    ("mkdir", ErrorId.ErrOverlayDir),  # the writable copy of etc
    ("chmod", ErrorId.ErrOverlayDir),
    ("copy_tree", ErrorId.ErrOverlayDir),
    ("mount", ErrorId.ErrBindMountSubdir),  # the copy bound over etc
    ("mount", ErrorId.ErrBindMountSubdir),  # ... made private
    ("mkdir", ErrorId.ErrCreateTempDir),
    ("chmod", ErrorId.ErrCreateTempDir),
    ("mount", ErrorId.ErrOverlayTempDir),  # tmpfs on tmp
    ("mount", ErrorId.ErrOverlayTempDir),  # ... made private
]
REMOVE = [  # every mount goes before anything is deleted
    ("umount", ErrorId.ErrUnmountSubdir),  # tmp
    ("umount", ErrorId.ErrUnmountSubdir),  # etc
    ("umount", ErrorId.ErrUnmountRoot),
    ("rmdir", ErrorId.ErrRemoveMountDir),
    ("remove_tree", ErrorId.ErrRemoveMountDir),
    ("rmdir", ErrorId.ErrRemoveMountDir),
    ("rmdir", ErrorId.ErrRemoveMountDir),
]


def _probed(base_dir: str, registry: Registry) -> tuple[RootFS, FaultySyscalls]:
    return probed_rootfs(base_dir, "bindtest", registry=registry)


def test_clean_run_makes_exactly_these_calls(base_dir: str, registry: Registry, prototype: str) -> None:
    rfs, faulty = _probed(base_dir, registry)
    root = rfs.generate(prototype)
    assert [c.name for c in faulty.calls] == [name for name, _ in GENERATE]
    faulty.calls.clear()
    rfs.remove(root)
    assert [c.name for c in faulty.calls] == [name for name, _ in REMOVE]


@pytest.mark.parametrize("step", range(1, len(GENERATE) + 1))
def test_generate_fails_at_each_step_and_leaves_nothing(
    base_dir: str, registry: Registry, prototype: str, step: int
) -> None:
    rfs, faulty = _probed(base_dir, registry)
    faulty.fail_on = {step}
    with pytest.raises(RootFSError) as info:
        rfs.generate(prototype)
    assert info.value.error_id is GENERATE[step - 1][1]
    assert "injected failure" in str(info.value)
    assert info.value.cleanup_errors == []
    assert instance_mounts(base_dir) == []
    assert sorted(os.listdir(base_dir)) == [".rootfs"]
    assert rfs.instances() == []
    # base_dir and prototype fixtures check no record, marker or change remains


@pytest.mark.parametrize("step", range(1, len(REMOVE) + 1))
def test_remove_fails_at_each_step_then_succeeds(
    base_dir: str, registry: Registry, prototype: str, step: int
) -> None:
    rfs, faulty = _probed(base_dir, registry)
    root = rfs.generate(prototype)
    faulty.calls.clear()
    faulty.fail_on = {step}
    with pytest.raises(RootFSError) as info:
        rfs.remove(root)
    assert info.value.error_id is REMOVE[step - 1][1]
    (instance,) = rfs.instances()  # the record is kept...
    # a failure before anything was undone leaves it ready; after, removing
    assert instance.state == ("ready" if step == 1 else "removing")
    assert os.path.isfile(os.path.join(prototype, "etc/hostname"))
    faulty.fail_on = set()
    rfs.remove(root)  # ...and a later remove finishes the job
    assert rfs.instances() == []


def test_failed_rollback_is_reported_and_gc_finishes(
    base_dir: str, registry: Registry, prototype: str
) -> None:
    rfs, faulty = _probed(base_dir, registry)
    # fail the tmpfs mount (15), then the rollback's unmount of etc (17; 16
    # is the harmless umount of the tmpfs that never was)
    faulty.fail_on = {15, 17}
    with pytest.raises(RootFSError) as info:
        rfs.generate(prototype)
    assert info.value.error_id is ErrorId.ErrOverlayTempDir
    assert [e.error_id for e in info.value.cleanup_errors] == [ErrorId.ErrUnmountSubdir]
    (instance,) = rfs.instances()
    assert instance.state == "incomplete"
    assert instance_mounts(base_dir)  # still mounted, so nothing below was deleted
    assert os.path.isfile(os.path.join(instance.root, "etc/hostname"))
    faulty.fail_on = set()
    assert rfs.gc(dry_run=True).instances == [instance.id]
    assert rfs.instances() == [instance]
    assert rfs.gc().instances == [instance.id]
    assert rfs.instances() == []
    assert instance_mounts(base_dir) == []


def test_interrupt_during_generate_is_rolled_back(
    base_dir: str, registry: Registry, prototype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    rfs, faulty = _probed(base_dir, registry)

    def interrupt(source: str, target: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(faulty.inner, "copy_tree", interrupt)
    with pytest.raises(KeyboardInterrupt):
        rfs.generate(prototype)
    assert instance_mounts(base_dir) == []
    assert rfs.instances() == []
