"""The aufs mount plan, seen through simulated mounts (this kernel has no aufs):
the exact calls of generate and remove, and that every step is taken back
when any one of them fails."""

from __future__ import annotations

import os

import pytest

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.context import BuildContext
from rootfs_core.hookspecs import BAND_OTHER_UNION
from rootfs_core.syscalls import MS_BIND, MS_PRIVATE, UMOUNT_NOFOLLOW
from rootfs_core.testing.checks import tree_checksum
from rootfs_core.testing.faults import Call, FakeMounts, FaultySyscalls

PAGE = os.sysconf("SC_PAGE_SIZE")


def options(instance: str, prototype: str) -> str:
    return f"br:{instance}/rw=rw:{prototype}=ro+wh,xino={instance}/xino/.aufs.xino,udba=reval"


def planned_calls(instance: str, prototype: str) -> list[Call]:
    """Every host-changing call of one generate, in order."""
    root = f"{instance}/root"
    proto_mode = os.stat(prototype).st_mode & 0o7777
    return [
        Call("mkdir", (instance, 0o755)),
        Call("chmod", (instance, 0o755)),
        Call("mkdir", (root, 0o755)),
        Call("chmod", (root, 0o755)),
        Call("mkdir", (f"{instance}/rw", proto_mode)),
        Call("chmod", (f"{instance}/rw", proto_mode)),
        Call("mkdir", (f"{instance}/xino", 0o700)),
        Call("chmod", (f"{instance}/xino", 0o700)),
        Call("mount", ("none", root, "aufs", 0, options(instance, prototype))),
        # made private at once, before anything could be mounted on it
        Call("mount", ("", root, "", MS_PRIVATE, "")),
    ]


# What generate reports when the planned call of the same index fails.
FAILURE_IDS = [
    ErrorId.ErrCreateTempDir,  # the instance directory
    ErrorId.ErrCreateTempDir,
    ErrorId.ErrCreateMountDir,  # the root
    ErrorId.ErrCreateMountDir,
    ErrorId.ErrCreateTempDir,  # the writable branch
    ErrorId.ErrCreateTempDir,
    ErrorId.ErrCreateTempDir,  # the xino directory
    ErrorId.ErrCreateTempDir,
    ErrorId.ErrBindMountRoot,  # the aufs mount
    ErrorId.ErrBindMountRoot,  # the aufs mount made private
]


def probed(base_dir: str, syscalls: FaultySyscalls) -> RootFS:
    """aufs forced over ``syscalls``, its probe already run and passed."""
    rfs = RootFS(base_dir, backend="aufs", syscalls=syscalls)
    assert rfs.selected_backend() == "aufs"
    syscalls.calls.clear()
    return rfs


def assert_nothing_left(rfs: RootFS, fake: FakeMounts) -> None:
    assert fake.mounted == []
    assert rfs.instances() == []
    assert sorted(set(os.listdir(rfs.base_dir)) - {".rootfs"}) == []


def test_backend_info_sits_in_the_other_union_band(base_dir: str, pretend_aufs: None) -> None:
    (status,) = [s for s in RootFS(base_dir, syscalls=FakeMounts()).backends() if s.name == "aufs"]
    assert status.priority == 250
    assert status.priority in BAND_OTHER_UNION
    assert status.target == "rootfs_aufs.backend"


def test_generate_makes_exactly_the_planned_calls(base_dir: str, prototype: str, pretend_aufs: None) -> None:
    faulty = FaultySyscalls(inner=FakeMounts())
    rfs = probed(base_dir, faulty)
    root = rfs.generate(prototype)
    instance = os.path.dirname(root)
    assert os.path.dirname(instance) == base_dir
    assert faulty.calls == planned_calls(instance, os.path.realpath(prototype))
    rfs.remove(root)


def test_generate_mounts_one_aufs_with_these_options(
    rfs: RootFS, fake: FakeMounts, base_dir: str, prototype: str
) -> None:
    root = rfs.generate(prototype)
    instance = os.path.dirname(root)
    proto = os.path.realpath(prototype)
    assert fake.mount_calls == [("none", root, "aufs", 0, options(instance, proto))]
    assert fake.mounted == [root]
    assert sorted(os.listdir(instance)) == ["root", "rw", "xino"]
    assert os.stat(f"{instance}/rw").st_mode & 0o7777 == os.stat(proto).st_mode & 0o7777
    assert os.stat(f"{instance}/xino").st_mode & 0o7777 == 0o700
    (made,) = rfs.instances()
    assert (made.id, made.backend, made.state) == (os.path.basename(instance), "aufs", "ready")
    rfs.remove(root)
    assert_nothing_left(rfs, fake)


def test_remove_unmounts_the_root_then_deletes(base_dir: str, prototype: str, pretend_aufs: None) -> None:
    faulty = FaultySyscalls(inner=FakeMounts())
    rfs = probed(base_dir, faulty)
    root = rfs.generate(prototype)
    instance = os.path.dirname(root)
    faulty.calls.clear()
    rfs.remove(root)
    assert faulty.calls == [
        Call("umount", (root, UMOUNT_NOFOLLOW)),
        Call("remove_tree", (f"{instance}/xino",)),
        Call("remove_tree", (f"{instance}/rw",)),
        Call("rmdir", (root,)),
        Call("rmdir", (instance,)),
    ]
    assert isinstance(faulty.inner, FakeMounts)
    assert_nothing_left(rfs, faulty.inner)


@pytest.mark.parametrize("step", range(1, len(FAILURE_IDS) + 1))
def test_a_failed_step_is_rolled_back_completely(
    base_dir: str, prototype: str, pretend_aufs: None, step: int
) -> None:
    fake = FakeMounts()
    faulty = FaultySyscalls(inner=fake)
    rfs = probed(base_dir, faulty)
    before = tree_checksum(prototype)
    faulty.fail_on = {step}
    with pytest.raises(RootFSError) as caught:
        rfs.generate(prototype)
    instance = str(faulty.calls[0].args[0])
    assert faulty.calls[step - 1] == planned_calls(instance, os.path.realpath(prototype))[step - 1]
    assert caught.value.error_id is FAILURE_IDS[step - 1]
    assert caught.value.cleanup_errors == []
    assert_nothing_left(rfs, fake)
    assert tree_checksum(prototype) == before


# The base directory's one-time set-up (bind on itself, made private:
# rootfs_core.basedir), instance, root, the core's probe prototype, rw, xino
# (mkdir + chmod each), the mount, made private.
PROBE_CALLS = 2 + 2 * 5 + 2


@pytest.mark.parametrize("step", range(1, PROBE_CALLS + 1))
def test_a_failed_probe_step_means_unsupported_and_nothing_left(
    base_dir: str, prototype: str, pretend_aufs: None, step: int
) -> None:
    fake = FakeMounts()
    faulty = FaultySyscalls(inner=fake, fail_on={step})
    rfs = RootFS(base_dir, backend="aufs", syscalls=faulty)
    with pytest.raises(RootFSError) as caught:
        rfs.generate(prototype)
    assert caught.value.error_id is ErrorId.ErrBackendUnsupported
    assert "injected failure" in str(caught.value)
    assert_nothing_left(rfs, fake)


def test_probe_mounts_the_same_plan_in_its_throwaway_instance(base_dir: str, pretend_aufs: None) -> None:
    fake = FakeMounts()
    assert RootFS(base_dir, backend="aufs", syscalls=fake).probe("aufs").supported
    # Before the first instance, the base directory is bound on itself
    # (rootfs_core.basedir); then the probe's one aufs mount.
    (base_bind, (source, target, fstype, flags, data)) = fake.mount_calls
    assert base_bind == (base_dir, base_dir, "", MS_BIND, "")
    instance = os.path.dirname(target)
    assert (source, fstype, flags) == ("none", "aufs", 0)
    assert data == options(instance, f"{instance}/prototype")
    # Each made private at once.
    assert fake.propagation_calls == [(base_dir, MS_PRIVATE), (target, MS_PRIVATE)]
    assert fake.umount_calls == [target]
    assert fake.mounted == []


def test_a_busy_root_is_not_deleted_through(base_dir: str, prototype: str, pretend_aufs: None) -> None:
    """If the unmount fails, nothing below it is deleted and the record stays,
    so a second remove finishes the job."""
    fake = FakeMounts()
    faulty = FaultySyscalls(inner=fake)
    rfs = probed(base_dir, faulty)
    root = rfs.generate(prototype)
    instance = os.path.dirname(root)
    faulty.calls.clear()
    faulty.fail_on = {1}  # the umount
    with pytest.raises(RootFSError) as caught:
        rfs.remove(root)
    assert caught.value.error_id is ErrorId.ErrUnmountRoot
    assert fake.mounted == [root]
    assert sorted(os.listdir(instance)) == ["root", "rw", "xino"]
    assert [i.root for i in rfs.instances()] == [root]
    faulty.fail_on = set()
    rfs.remove(root)
    assert_nothing_left(rfs, fake)


@pytest.mark.parametrize("separator", [",", ":", "="])
def test_a_path_aufs_cannot_express_is_refused_before_any_step(
    rfs: RootFS, fake: FakeMounts, tmp_path: str, separator: str
) -> None:
    proto = os.path.join(tmp_path, f"proto{separator}type")
    os.mkdir(proto)
    with pytest.raises(RootFSError) as caught:
        rfs.generate(proto)
    assert caught.value.error_id is ErrorId.ErrBindMountRoot
    assert separator in caught.value.message
    assert fake.mount_calls == []
    assert_nothing_left(rfs, fake)


def test_a_prototype_path_too_long_for_the_options_fails_clearly(
    rfs: RootFS, fake: FakeMounts, tmp_path: str
) -> None:
    proto = str(tmp_path)
    while len(proto) < PAGE - 100:  # a legal path (under PATH_MAX), too long for one page of options
        proto = os.path.join(proto, "d" * min(250, PAGE - 100 - len(proto)))
    os.makedirs(proto)
    with pytest.raises(RootFSError) as caught:
        rfs.generate(proto)
    assert caught.value.error_id is ErrorId.ErrBindMountRoot
    assert "one-page limit" in caught.value.message
    assert fake.mount_calls == []
    assert_nothing_left(rfs, fake)


@pytest.mark.parametrize(("fstype", "kind"), [("overlay", "overlayfs"), ("aufs", "aufs")])
def test_a_writable_branch_on_a_union_is_refused_with_the_reason(
    base_dir: str, prototype: str, pretend_aufs: None, monkeypatch: pytest.MonkeyPatch, fstype: str, kind: str
) -> None:
    monkeypatch.setattr(BuildContext, "filesystem_of", lambda self, path: (fstype, "/"))
    fake = FakeMounts()
    rfs = RootFS(base_dir, backend="aufs", syscalls=fake)
    (status,) = [s for s in rfs.backends() if s.name == "aufs"]
    assert not status.supported
    assert status.reason is not None
    assert f"base directory is on {kind}" in status.reason
    with pytest.raises(RootFSError) as caught:
        rfs.generate(prototype)
    assert caught.value.error_id is ErrorId.ErrBackendUnsupported
    assert f"aufs cannot keep its writable branch on {kind}" in str(caught.value)
    assert [call for call in fake.mount_calls if call[2] == "aufs"] == []
    assert_nothing_left(rfs, fake)
