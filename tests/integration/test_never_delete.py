"""Never delete what is not ours, on the real backends: a failed unmount, a
lying kernel interface, a corrupt journal, a stray entry in the base
directory, host data mounted into a root, and paths that are not roots must
never turn into deleting the prototype, host files or anything through a
live mount.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable

import pytest
from integration_support import assert_cli_error, assert_works, run_cli, text

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.store import Op, Step, Store
from rootfs_core.syscalls import MS_BIND, UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts, mount_points, mounts_below, tree_checksum
from rootfs_core.testing.faults import FaultySyscalls


def _snapshot(prototype: str) -> tuple[str, list[str]]:
    """What must never change: the prototype and the host's mount table."""
    return tree_checksum(prototype), mount_points()


@pytest.mark.parametrize("error", [errno.EIO, errno.EINVAL, errno.EPERM], ids=errno.errorcode.get)
def test_a_failing_root_unmount_deletes_nothing(
    base_dir: str, backend: str, prototype: str, error: int
) -> None:
    """The unmount of the root fails (injected with ``FaultySyscalls``; EINVAL
    is what umount2 says of a path that is no mount point, so rootfs must
    confirm rather than believe it): remove fails with ``ErrUnmountRoot``,
    the root is still mounted, the prototype and its files are intact; gc
    afterwards deletes nothing of them either, and a later remove succeeds."""
    faulty = FaultySyscalls(error=error)
    rfs = RootFS(base_dir, backend=backend, syscalls=faulty)
    rfs.selected_backend()
    first = rfs.generate(prototype)
    faulty.calls.clear()
    rfs.remove(first)
    (at,) = [n for n, call in enumerate(faulty.calls, 1) if call.name == "umount" and call.args[0] == first]
    root = rfs.generate(prototype)  # the same plan: its root's unmount is call `at` as well
    checksum = tree_checksum(prototype)
    faulty.calls.clear()
    faulty.fail_on = {at}
    with pytest.raises(RootFSError) as info:
        rfs.remove(root)
    assert info.value.error_id is ErrorId.ErrUnmountRoot, info.value
    assert faulty.calls[at - 1].args[0] == root
    assert LinuxSyscalls().is_mountpoint(root)
    assert tree_checksum(prototype) == checksum
    with open(os.path.join(prototype, "etc/hostname"), "rb") as fh:
        assert fh.read() == b"prototype\n"
    # The root's unmount first (overlayfs): nothing was touched, it is still
    # ready. After other unmounts (the quilt): a removal took effect.
    half_removed = at != 1
    assert [(i.root, i.state) for i in rfs.instances()] == [(root, "removing" if half_removed else "ready")]
    gc = run_cli(base_dir, "gc", "--json")  # finishes a half-removed quilt, leaves a ready overlay
    assert gc.returncode == 0, text(gc.stderr)
    assert json.loads(gc.stdout)["instances"] == (
        [os.path.basename(os.path.dirname(root))] if half_removed else []
    )
    assert tree_checksum(prototype) == checksum
    with open(os.path.join(prototype, "etc/hostname"), "rb") as fh:
        assert fh.read() == b"prototype\n"
    if half_removed:
        assert rfs.instances() == []  # gc finished the removal: nothing is left to remove
    else:
        assert [(i.root, i.state) for i in rfs.instances()] == [(root, "ready")]
        faulty.fail_on = set()
        assert rfs.remove(root) is True
    assert instance_mounts(base_dir) == []
    assert not os.path.lexists(os.path.dirname(root))


class UnmountDoesNothing(LinuxSyscalls):
    """A broken umount that claims success and unmounts nothing."""

    def umount(self, target: str, flags: int) -> None:
        return None


class NothingIsMounted(LinuxSyscalls):
    """A broken mount check that never sees a mount point."""

    def is_mountpoint(self, path: str) -> bool:
        return False


@pytest.mark.parametrize("liar", [UnmountDoesNothing, NothingIsMounted])
def test_a_lying_kernel_interface_never_deletes_the_prototype(
    base_dir: str, backend: str, prototype: str, liar: Callable[[], LinuxSyscalls]
) -> None:
    """Even when the syscalls lie (an unmount that does nothing, a mount
    check that sees no mounts), remove never deletes through the root:
    either it fails with an unmount/delete error id and the root is still
    mounted, or it really unmounted everything and left nothing; in both
    cases the prototype and the host's mounts outside the instance are
    intact. (Defence in depth: deletion refuses to cross mounts by itself,
    and the root's directories are only ever rmdir'ed.)"""
    root = RootFS(base_dir, backend=backend).generate(prototype)
    instance_dir = os.path.dirname(root)
    checksum, before = _snapshot(prototype)
    failed: RootFSError | None = None
    try:
        RootFS(base_dir, backend=backend, syscalls=liar()).remove(root)
    except RootFSError as exc:
        failed = exc
    assert tree_checksum(prototype) == checksum
    outside = [p for p in before if not p.startswith(instance_dir + "/")]
    assert [p for p in mount_points() if not p.startswith(instance_dir + "/")] == outside
    if failed is None:
        assert not os.path.lexists(instance_dir) and mounts_below(instance_dir) == []
        return
    assert failed.error_id in (ErrorId.ErrUnmountSubdir, ErrorId.ErrUnmountRoot, ErrorId.ErrRemoveMountDir)
    assert LinuxSyscalls().is_mountpoint(root), failed
    # The journal may no longer name mounts the liar "undid": take them down by hand.
    for point in reversed(mounts_below(root)):
        if point != root:
            LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)
    RootFS(base_dir, backend=backend).remove(root)
    assert tree_checksum(prototype) == checksum


_HOSTILE = (
    "tree of the prototype",
    "tree of a path climbing out",
    "tree of /etc",
    "tree of the mounted root",
    "tree below a symlink to the prototype",
    "tree of a symlink to the prototype",
    "dir that is a symlink to the prototype",
)


def _hostile_steps(prototype: str, root: str) -> dict[str, tuple[Step, ErrorId | None]]:
    """Steps a corrupt journal may end with, and the error id of the remove
    (None: the record fails validation, ``ErrRecord`` on reading it, and
    remove takes the instance apart by what is really in its directory)."""
    instance_dir = os.path.dirname(root)
    escape = os.path.join(instance_dir, "..", "..", os.path.relpath(prototype, "/"))
    link = os.path.join(instance_dir, "evil")
    undo = ErrorId.ErrRemoveMountDir
    steps = {
        "tree of the prototype": (Step(Op.TREE, prototype, undo), None),
        "tree of a path climbing out": (Step(Op.TREE, escape, undo), None),
        "tree of /etc": (Step(Op.TREE, "/etc", undo), None),
        "tree of the mounted root": (Step(Op.TREE, root, undo), ErrorId.ErrRecord),
        "tree below a symlink to the prototype": (
            Step(Op.TREE, os.path.join(link, "etc"), undo),
            ErrorId.ErrRecord,
        ),
        "tree of a symlink to the prototype": (Step(Op.TREE, link, undo), ErrorId.ErrRemoveMountDir),
        "dir that is a symlink to the prototype": (Step(Op.DIR, link, undo), ErrorId.ErrRemoveMountDir),
    }
    assert tuple(steps) == _HOSTILE
    return steps


@pytest.mark.parametrize("what", _HOSTILE)
def test_a_corrupt_journal_cannot_delete_the_prototype(
    base_dir: str, backend: str, prototype: str, what: str
) -> None:
    """A journal naming something that is not the instance's own (a bug, or
    a record edited by hand) never deletes outside the instance: a path
    outside it fails validation (``ErrRecord`` on reading the record) and
    remove takes the instance apart by what is really in its directory; a
    path inside it that would delete through the mounted root or through a
    symlink makes remove fail and touch nothing. The prototype, /etc and
    the host's mounts are intact either way, and a symlink is never
    followed."""
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(prototype)
    instance_dir = os.path.dirname(root)
    instance_id = os.path.basename(instance_dir)
    link = os.path.join(instance_dir, "evil")
    os.symlink(prototype, link)
    store = Store(base_dir)
    original = store.read(instance_id)
    assert original is not None
    checksum, before = _snapshot(prototype)
    step, expected = _hostile_steps(prototype, root)[what]
    record = store.read(instance_id)
    assert record is not None
    record.steps.append(step)  # the last step is undone first
    store.write(record)
    if expected is None:
        with pytest.raises(RootFSError) as info:
            store.read(instance_id)
        assert info.value.error_id is ErrorId.ErrRecord, f"{what}: {info.value}"
        assert [(i.id, i.state) for i in rfs.instances()] == [(instance_id, "incomplete")], what
        assert rfs.remove(root) is True, what
        assert not os.path.lexists(instance_dir), what
        assert mount_points() == [p for p in before if not p.startswith(instance_dir + "/")], what
        assert rfs.instances() == [], what
    else:
        with pytest.raises(RootFSError) as info:
            rfs.remove(root)
        assert info.value.error_id is expected, f"{what}: {info.value}"
        assert mount_points() == before, what
        assert os.path.islink(link), what
        assert_works(root)
        assert [(i.root, i.state) for i in rfs.instances()] == [(root, "ready")], what
        store.write(original)
        os.unlink(link)
        assert rfs.remove(root) is True
    assert tree_checksum(prototype) == checksum, what
    assert os.path.isfile(os.path.join(prototype, "etc/hostname")), what
    assert os.path.isdir("/etc") and os.path.isfile("/etc/passwd"), what


@pytest.mark.parametrize("shape", ["id-named symlink", "id-named dir with a symlinked root"])
def test_gc_never_follows_a_symlink_in_the_base_dir(
    base_dir: str, prototype: str, leak_guard: None, shape: str
) -> None:
    """An entry of the base directory named like an instance, with no
    record, that leads to the prototype through a symlink: gc deletes the
    entry's own files at most, never what it points to (a symlink in place
    of the instance directory makes gc fail with ``ErrRemoveMountDir``).
    In a directory rootfs never initialised, gc touches nothing at all
    (``ErrNotBaseDir``)."""
    stray = os.path.join(base_dir, "0123456789ab")
    if shape == "id-named symlink":
        os.symlink(prototype, stray)
    else:
        os.mkdir(stray)
        os.symlink(prototype, os.path.join(stray, "root"))
    checksum, before = _snapshot(prototype)
    refused = run_cli(base_dir, "gc", "--json")
    assert_cli_error(refused, "ErrNotBaseDir")
    assert os.path.islink(stray if shape == "id-named symlink" else os.path.join(stray, "root"))
    Store(base_dir).ensure()  # a base directory rootfs has used, as after a first generate
    proc = run_cli(base_dir, "gc", "--json")
    if shape == "id-named symlink":
        assert_cli_error(proc, "ErrRemoveMountDir")
        os.unlink(stray)
    else:
        assert proc.returncode == 0, text(proc.stderr)
        assert not os.path.lexists(stray)
    assert tree_checksum(prototype) == checksum
    assert mount_points() == before


def _volume_point(root: str, backend: str, via: str) -> str:
    """Where host data gets mounted: inside the root, or (as a confused
    tool might) on the instance's own writable layer."""
    if via == "root":
        return os.path.join(root, "tmp", "volume")
    instance_dir = os.path.dirname(root)
    if backend == "overlayfs":
        return os.path.join(instance_dir, "upper", "volume")
    (tmp_copy,) = [n for n in os.listdir(os.path.join(instance_dir, "rw")) if n.endswith("-tmp")]
    return os.path.join(instance_dir, "rw", tmp_copy, "volume")


@pytest.mark.parametrize("via", ["root", "layer"])
def test_host_data_mounted_into_a_root_is_never_deleted(
    base_dir: str, backend: str, prototype: str, scratch: Callable[[str], str], via: str
) -> None:
    """A host directory bind-mounted into a live root (a container volume),
    or onto the instance's writable layer: remove fails with an error id,
    the host data is intact, and so it is after gc (which either leaves the
    instance alone or fails clearly on it); once the volume is unmounted, a
    later remove succeeds."""
    host = scratch("volume-")
    with open(os.path.join(host, "precious"), "w") as fh:
        fh.write("keep me\n")
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(prototype)
    point = _volume_point(root, backend, via)
    os.mkdir(point)
    LinuxSyscalls().mount(host, point, "", MS_BIND, "")
    try:
        with pytest.raises(RootFSError) as info:
            rfs.remove(root)
        assert info.value.error_id in (ErrorId.ErrRootBusy, ErrorId.ErrRemoveMountDir), info.value
        gc = run_cli(base_dir, "gc", "--json")  # a half-removed instance: gc cannot finish it either
        if gc.returncode != 0:
            assert assert_cli_error(gc) in ("ErrRootBusy", "ErrRemoveMountDir")
        with open(os.path.join(host, "precious")) as fh:
            assert fh.read() == "keep me\n"
        assert LinuxSyscalls().is_mountpoint(point)
    finally:
        LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)
    rfs.remove(root)
    assert os.listdir(host) == ["precious"]


def test_remove_refuses_every_path_that_is_not_a_root(
    base_dir: str, backend: str, prototype: str, scratch: Callable[[str], str]
) -> None:
    """``rootfs remove`` of ``/``, ``/etc``, the prototype, the base dir, its
    state dir, paths inside a root, the instance directory, and a path shaped
    like a root of another base dir: exit 1 with ``ErrNotOurRoot`` each time,
    and the mount table, the prototype and the root are unchanged."""
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(prototype)
    other = os.path.join(scratch("other-base-"), os.path.basename(os.path.dirname(root)), "root")
    os.makedirs(other)
    targets = [
        "/",
        "/etc",
        prototype,
        base_dir,
        os.path.join(base_dir, ".rootfs"),
        os.path.join(root, "etc"),
        os.path.join(root, "tmp"),
        os.path.join(root, "usr/bin"),
        os.path.dirname(root),
        os.path.join(root, ".."),
        other,
    ]
    checksum, before = _snapshot(prototype)
    for target in targets:
        proc = run_cli(base_dir, "remove", target)
        assert_cli_error(proc, "ErrNotOurRoot")
        assert mount_points() == before, target
        assert tree_checksum(prototype) == checksum, target
        assert os.path.isdir("/etc") and os.path.isdir(other), target
        assert_works(root)
    assert [i.root for i in rfs.instances()] == [root]
    rfs.remove(root)
