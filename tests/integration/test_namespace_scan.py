"""The cross-namespace scan's shortcut, and the kernel facts it stands on,
verified on the running kernel (``rootfs_core/namespaces.py`` says why).

A remove asks every other mount namespace whether it holds a copy of the
instance's mounts. Where the kernel lists the namespaces and their mounts
(Linux 6.12, as root), a namespace none of whose mounts is newer than the
instance's oldest one is ruled out without reading anything. That is sound
only if every copy of a mount, however made, is a new mount with a larger
unique id; if ``listmount`` sees every mount of a namespace (a pivoted
container's too); and if the kernel's list of namespaces misses none that a
process is in. Each is checked here, with real namespaces; then that the
shortcut finds a copy moved into a namespace made *before* the generate
(which no ordering of namespaces would), describing that namespace's
newer mounts with ``statmount`` as its ``mountinfo`` would, even where a
chrooted process's ``mountinfo`` would hide the copy; that it and
the fallback (the ``/proc`` walk, used where the kernel cannot list, or
may not be trusted to) agree; and that the fallback still refuses a used
root and keeps a merely copied one's data.

Run as root: ``pytest -p no:cacheprovider tests/integration/test_namespace_scan.py``.
"""

from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import os
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from rootfs_core import ErrorId, RootFS, RootFSError, namespaces, teardown
from rootfs_core.syscalls import MS_PRIVATE, LinuxSyscalls
from rootfs_core.testing.checks import mounts_below
from rootfs_core.testing.fixtures import assert_base_dir_clean
from rootfs_core.testing.neighbours import copier, holder, mover, runc_container

_NS_GET_MNTNS_ID = (2 << 30) | (8 << 16) | (0xB7 << 8) | 5  # _IOR(NSIO, 5, __u64)
_NS_MNT_GET_INFO = (2 << 30) | (16 << 16) | (0xB7 << 8) | 10  # _IOR(NSIO, 10, struct mnt_ns_info)
_NR_LISTMOUNT = 458
_LSMT_ROOT = 2**64 - 1


# ------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True)
def _kernel_lists_namespaces() -> None:
    """Every test here is about the kernel's lists: as root on a kernel
    that has them (6.12), the scan must be using them."""
    if os.geteuid() != 0:
        pytest.skip("real mounts and the kernel's namespace list need root")
    release = tuple(int(part) for part in os.uname().release.split(".")[:2])
    if release < (6, 12):
        pytest.skip(f"Linux {os.uname().release} lists no mount namespaces (6.12 does)")
    assert namespaces._sees_every_namespace(), (
        "as root in the initial user namespace the kernel lists them all"
    )


def _namespace_id(pid: int) -> int:
    """The 64-bit id of the mount namespace of process ``pid``."""
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        buf = bytearray(8)
        fcntl.ioctl(fd, _NS_GET_MNTNS_ID, buf)
        return int.from_bytes(buf, "little")
    finally:
        os.close(fd)


def _mount_count(pid: int) -> int:
    """How many mounts the namespace of ``pid`` has, as the kernel counts
    them (``NS_MNT_GET_INFO``, without the namespace's own root)."""
    fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    try:
        info = bytearray(16)
        info[0] = 16
        fcntl.ioctl(fd, _NS_MNT_GET_INFO, info)
        return int.from_bytes(info[4:8], "little")
    finally:
        os.close(fd)


def _listmount(namespace: int) -> list[int]:
    """Every mount ``listmount(LSMT_ROOT)`` lists in namespace ``namespace``."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    request = ctypes.create_string_buffer(struct.pack("<IIQQQ", 32, 0, _LSMT_ROOT, 0, namespace), 32)
    ids = (ctypes.c_uint64 * 100_000)()
    count = libc.syscall(_NR_LISTMOUNT, request, ids, ctypes.c_size_t(len(ids)), ctypes.c_ulong(0))
    if count < 0:
        raise OSError(ctypes.get_errno(), "listmount")
    return list(ids[:count])


def _unique_id(path: str) -> int:
    found = namespaces._unique_mount_id(path)
    assert found is not None and found[1], f"{path} is not a mount"
    return found[0]


def _process_namespaces() -> set[str]:
    """The mount namespaces (their /proc links) of every process but ours."""
    own = os.readlink("/proc/self/ns/mnt")
    seen = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                seen.add(os.readlink(f"/proc/{name}/ns/mnt"))
            except OSError:
                continue
    return seen - {own}


def _listed_newer(oldest: int) -> dict[str, tuple[int, list[int] | None]]:
    """The other namespaces with a mount newer than ``oldest``, by link name:
    their ids, and those mounts' ids."""
    listed = namespaces._namespaces_with_newer_mounts(oldest, frozenset())
    assert listed is not None
    return listed[0]


def _listed() -> dict[str, int]:
    """Every other mount namespace the kernel lists, by link name, with its
    id: the scan's own listing, asked for mounts newer than id 0."""
    return {name: namespace for name, (namespace, _) in _listed_newer(0).items()}


@pytest.fixture
def tmpfs(scratch: Callable[[str], str], leak_guard: None) -> Iterator[str]:
    """A private tmpfs mount of the test's own, unmounted at the end."""
    place = scratch("scan-tmpfs-")
    syscalls = LinuxSyscalls()
    syscalls.mount("rootfs-test", place, "tmpfs", 0, "size=1M")
    try:
        syscalls.mount("", place, "", MS_PRIVATE, "")
        yield place
    finally:
        syscalls.umount(place, 0)


def _signature(rfs: RootFS, root: str) -> namespaces.Signature:
    """The signature a remove of ``root`` computes, while it is mounted."""
    instance_dir = os.path.dirname(root)
    record = rfs._store.read(os.path.basename(instance_dir))
    assert record is not None
    return teardown.signature(instance_dir, record.steps, record.prototype, LinuxSyscalls())


def _without_the_kernels_list(signature: namespaces.Signature) -> namespaces.Signature:
    """The same signature with no oldest mount: the scan walks ``/proc``."""
    return dataclasses.replace(signature, oldest=None)


# ------------------------------------------------------------------ the kernel facts
def test_every_copy_of_a_mount_is_newer_than_it_and_older_namespaces_have_none(
    tmpfs: str, scratch: Callable[[str], str]
) -> None:
    """A namespace made before a mount has no mount newer than it, so the
    kernel rules it out; one made after holds a copy with a larger unique
    id; a copy moved into the older namespace (``open_tree`` +
    ``move_mount``, at a path of its own) is newer too, and makes that
    namespace a candidate. Unique ids are what ``statx`` gives here and
    what ``listmount`` compares."""
    with copier() as untouched, copier() as receiving:
        place = scratch("scan-moved-")
        fresh = scratch("scan-mount-")
        LinuxSyscalls().mount("rootfs-test", fresh, "tmpfs", 0, "size=1M")
        try:
            LinuxSyscalls().mount("", fresh, "", MS_PRIVATE, "")
            oldest = namespaces.oldest_mount([fresh])
            assert oldest == _unique_id(fresh) and oldest > _unique_id(tmpfs)
            with copier() as later, mover(receiving, fresh, place) as moved:
                copy_here = _unique_id(f"/proc/{later.pid}/root{fresh}")
                copy_moved = _unique_id(f"/proc/{moved.pid}/root{place}")
                assert copy_here > oldest and copy_moved > oldest
                asks = namespaces._MountsAfter(oldest)
                assert asks.newer_in(_namespace_id(untouched.pid)) == []
                every = asks.newer_in(_namespace_id(later.pid))  # all of them, copies made with it
                assert every is not None and copy_here in every and min(every) > oldest
                assert asks.newer_in(_namespace_id(receiving.pid)) == [copy_moved]
                newer = _listed_newer(oldest)
                assert os.readlink(f"/proc/{untouched.pid}/ns/mnt") not in newer
                assert os.readlink(f"/proc/{later.pid}/ns/mnt") in newer
                assert os.readlink(f"/proc/{receiving.pid}/ns/mnt") in newer
        finally:
            LinuxSyscalls().umount(fresh, 0)


def test_listmount_sees_every_mount_of_a_namespace_a_pivoted_container_included(
    base_dir: str, busybox_prototype: str, tmp_path: Path, tmpfs: str, scratch: Callable[[str], str]
) -> None:
    """``listmount(LSMT_ROOT)`` in another namespace lists as many mounts as
    the kernel counts in it: in a namespace cloned from ours, in one a copy
    was moved into, and in a runc container (``pivot_root``, its old root
    detached), whose mounts all hang below a root of its own."""
    rfs = RootFS(base_dir, backend="overlayfs")
    root = rfs.generate(busybox_prototype)
    try:
        with (
            copier() as cloned,
            copier() as receiving,
            runc_container(root, str(tmp_path)) as container,
            mover(receiving, tmpfs, scratch("scan-moved-")),
        ):
            for pid in (cloned.pid, receiving.pid, container.pid):
                listed = _listmount(_namespace_id(pid))
                assert len(listed) == len(set(listed)) == _mount_count(pid), pid
    finally:
        rfs.remove(root)


def test_the_kernel_lists_every_namespace_a_process_is_in(scratch: Callable[[str], str]) -> None:
    """Every mount namespace some process is in (other than ours), seen
    before and after the kernel's listing (so alive throughout), is in the
    listing, with the id the namespace's own file gives; a holder's and a
    copier's among them."""
    with copier() as idle, holder(scratch("scan-held-"), name="held", how="open") as using:
        before = _process_namespaces()
        listed = _listed()
        after = _process_namespaces()
        assert before & after <= set(listed), sorted((before & after) - set(listed))
        for pid in (idle.pid, using.pid):
            assert listed[os.readlink(f"/proc/{pid}/ns/mnt")] == _namespace_id(pid)


def test_oldest_mount_is_the_instances_first_and_none_under_a_stacked_mount(
    base_dir: str, prototype: str, scratch: Callable[[str], str]
) -> None:
    """``oldest_mount``: a quilt's root (mounted first) is older than its
    directories' binds; a target that is not a mount, or one with another
    mount stacked on it (its top mount's id would be too new), gives None."""
    rfs = RootFS(base_dir, backend="quilt")
    root = rfs.generate(prototype)
    try:
        signature = _signature(rfs, root)
        assert signature.oldest == _unique_id(root)
        assert all(_unique_id(target) >= signature.oldest for target in signature.targets)
        assert namespaces.oldest_mount([scratch("scan-plain-")]) is None
        LinuxSyscalls().mount("rootfs-test", root, "tmpfs", 0, "size=1M")
        try:
            assert namespaces.oldest_mount([root]) is None
            assert _signature(rfs, root).oldest is None
        finally:
            LinuxSyscalls().umount(root, 0)
    finally:
        rfs.remove(root)


def test_the_list_is_trusted_only_with_cap_sys_admin_in_the_initial_user_namespace() -> None:
    """Root in a user namespace of its own, or root without
    ``CAP_SYS_ADMIN``, may not see every namespace in the kernel's list
    (6.12 leaves out what it may not see, without a word): the scan walks
    ``/proc`` instead."""
    code = "from rootfs_core import namespaces; print(namespaces._sees_every_namespace())"
    for prefix in (
        ["unshare", "-U", "-r"],
        ["setpriv", "--inh-caps=-sys_admin", "--bounding-set=-sys_admin"],
    ):
        proc = subprocess.run(
            [*prefix, sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/"
        )
        assert (proc.returncode, proc.stdout) == (0, "False\n"), (prefix, proc.stderr)


# ------------------------------------------------------------------ the scan
def test_namespaces_made_before_the_generate_are_ruled_out_by_the_kernel(
    base_dir: str, prototype: str, scratch: Callable[[str], str]
) -> None:
    """Beside namespaces made before the instance (services), the kernel's
    answer rules each out: none is a candidate, each is remembered as clean
    by its id (so the second look asks nothing of it), and the scan finds
    no copy."""
    with copier() as first, copier() as second, holder(scratch("scan-old-"), name="cwd", how="cwd") as third:
        rfs = RootFS(base_dir, backend="overlayfs")
        root = rfs.generate(prototype)
        try:
            signature = _signature(rfs, root)
            assert signature.oldest is not None
            newer = _listed_newer(signature.oldest)
            copies = namespaces.scan(signature, mounted_here=True)
            assert not copies and copies.found == {}
            for neighbour in (first, second, third):
                assert os.readlink(f"/proc/{neighbour.pid}/ns/mnt") not in newer
                assert _namespace_id(neighbour.pid) in copies.clean
        finally:
            rfs.remove(root)
    assert_base_dir_clean(base_dir)


@pytest.fixture
def many_mounts(scratch: Callable[[str], str], leak_guard: None) -> Iterator[Callable[[], str]]:
    """``many_mounts()``: mounts more little tmpfs in a directory than
    ``listmount`` is asked for at a time (``namespaces._CHUNK``), and
    returns it; all are unmounted at the end."""
    place = scratch("scan-many-")
    made: list[str] = []

    def mount() -> str:
        for index in range(namespaces._CHUNK + 1):
            point = os.path.join(place, str(index))
            os.mkdir(point)
            LinuxSyscalls().mount("rootfs-test", point, "tmpfs", 0, "size=64k")
            made.append(point)
        return place

    try:
        yield mount
    finally:
        for point in reversed(made):
            LinuxSyscalls().umount(point, 0)


@pytest.mark.parametrize("backend", ["overlayfs", "quilt"])
def test_the_kernels_list_and_the_proc_walk_find_the_same_copies(
    base_dir: str, prototype: str, backend: str, many_mounts: Callable[[], str]
) -> None:
    """Both ways find the same namespaces and the same copies (mount ids) of
    a copier made after the generate, of one made after many more mounts
    (listed a chunk at a time) and of a holder chrooted into the root,
    while the root is mounted here; and still, once ours are unmounted (by
    hand: the instance's id in what the kernel says of their mounts or in
    their mount tables, or its mount points at the same paths, with no
    device number to go by)."""
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(prototype)
    try:
        with copier() as early, holder(root) as using:
            many_mounts()
            with copier() as many:
                signature = _signature(rfs, root)
                assert signature.oldest is not None
                newer = _listed_newer(signature.oldest)
                listed_for_many = newer[os.readlink(f"/proc/{many.pid}/ns/mnt")][1]
                assert listed_for_many is not None and len(listed_for_many) > namespaces._CHUNK
                for mounted_here in (True, False):
                    if not mounted_here:
                        for point in reversed(mounts_below(os.path.dirname(root))):
                            LinuxSyscalls().umount(point, 0)
                    listed = namespaces.scan(signature, mounted_here=mounted_here)
                    walked = namespaces.scan(_without_the_kernels_list(signature), mounted_here=mounted_here)
                    assert listed.found == walked.found
                    holding = {os.readlink(f"/proc/{n.pid}/ns/mnt") for n in (early, many, using)}
                    assert set(listed.found) == holding
                    assert listed.holders() == walked.holders() == [f"{using.pid} ({using.comm()})"]
    finally:
        rfs.remove(root)


def _instance_data(root: str, backend: str) -> str:
    data = {"overlayfs": "upper", "quilt": "rw", "fuse-overlayfs": "upper"}[backend]
    return os.path.join(os.path.dirname(root), data)


@pytest.mark.parametrize("backend", ["overlayfs", "quilt", "fuse-overlayfs"])
def test_a_copy_moved_into_an_older_namespace_at_a_path_of_its_own_is_found(
    base_dir: str, prototype: str, backend: str, scratch: Callable[[str], str]
) -> None:
    """A namespace made before the generate, into which a copy of the root
    was moved at another path: used there (a working directory in it), the
    remove is refused naming the process, and nothing is touched; merely
    held, the remove unmounts ours and keeps the data until the namespace
    is gone. Found because the copy is newer than the instance's mounts, not
    because of where or when the namespace was made (a FUSE copy, which
    names nothing of the instance, by its device number while ours is
    mounted, and by its namespace still being alive once ours is not)."""
    if backend == "fuse-overlayfs":
        try:
            probe = RootFS(base_dir, backend=backend).probe(backend)
        except RootFSError as exc:
            pytest.skip(f"{backend}: {exc}")
        if not probe.supported:
            pytest.skip(f"{backend} is not supported here: {probe.reason}")
    with copier() as older:
        rfs = RootFS(base_dir, backend=backend)
        root = rfs.generate(prototype)
        try:
            before = mounts_below(os.path.dirname(root))
            with mover(older, root, scratch("scan-moved-"), use=True) as using:
                with pytest.raises(RootFSError) as info:
                    rfs.remove(root)
                assert info.value.error_id is ErrorId.ErrRootBusy
                assert f"{using.pid} ({using.comm()})" in str(info.value)
                assert mounts_below(os.path.dirname(root)) == before
            with mover(older, root, scratch("scan-moved-")) as copying:
                signature = _signature(rfs, root)
                assert signature.oldest is not None
                needles = signature.needles + signature.devices
                namespace, newer = _listed_newer(signature.oldest)[os.readlink(f"/proc/{older.pid}/ns/mnt")]
                assert newer is not None  # each is described: no process is looked at
                by_kernel = namespaces._copies_among(namespace, newer, needles)
                assert by_kernel and by_kernel == namespaces._matching_mounts(copying.pid, needles)
                assert rfs.remove(root) is False
                assert mounts_below(os.path.dirname(root)) == []
                assert os.path.isdir(_instance_data(root, backend))
                assert [i.state for i in rfs.instances()] == ["removing"]
        finally:
            older.stop()
            if rfs.instances():
                rfs.gc()
    assert rfs.instances() == []
    assert_base_dir_clean(base_dir)


def test_a_copy_moved_into_a_crowded_namespace_with_a_chrooted_first_process_is_found(
    base_dir: str, prototype: str, scratch: Callable[[str], str], many_mounts: Callable[[], str]
) -> None:
    """The same in a namespace made before the generate whose first process
    is chrooted elsewhere (its ``mountinfo`` would not show the copy) and
    which has more newer mounts than are listed at a time (a tree of them
    was moved in too): the kernel lists them all and names the copy."""
    with holder(scratch("scan-jail-"), name="held") as older:
        rfs = RootFS(base_dir, backend="overlayfs")
        root = rfs.generate(prototype)
        try:
            crowd = many_mounts()
            with mover(older, crowd, scratch("scan-crowd-")):
                pass  # the tree of copies stays in the namespace
            with mover(older, root, scratch("scan-moved-"), use=True) as using:
                signature = _signature(rfs, root)
                assert signature.oldest is not None
                newer = _listed_newer(signature.oldest)[os.readlink(f"/proc/{older.pid}/ns/mnt")][1]
                assert newer is not None and len(newer) > namespaces._CHUNK
                with pytest.raises(RootFSError) as info:
                    rfs.remove(root)
                assert info.value.error_id is ErrorId.ErrRootBusy
                assert f"{using.pid} ({using.comm()})" in str(info.value)
            assert rfs.remove(root) is False
            assert os.path.isdir(_instance_data(root, "overlayfs"))
        finally:
            older.stop()
            if rfs.instances():
                rfs.gc()
    assert rfs.instances() == []
    assert_base_dir_clean(base_dir)


@pytest.mark.parametrize("backend", ["overlayfs", "quilt"])
def test_without_the_kernels_list_a_used_root_is_refused_and_a_copied_ones_data_kept(
    base_dir: str, prototype: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback (the kernel cannot list namespaces to this process: an
    older kernel, a container): a holder chrooted into the root makes remove
    fail with ``ErrRootBusy`` naming it, nothing unmounted; a copier made
    after the generate makes it unmount ours and keep the data, which gc
    deletes once the copier is gone."""
    monkeypatch.setattr(namespaces, "_sees_every_namespace", lambda: False)
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(prototype)
    try:
        before = mounts_below(os.path.dirname(root))
        with holder(root) as using:
            with pytest.raises(RootFSError) as info:
                rfs.remove(root)
            assert info.value.error_id is ErrorId.ErrRootBusy
            assert f"{using.pid} ({using.comm()})" in str(info.value)
            assert mounts_below(os.path.dirname(root)) == before
        with copier():
            assert rfs.remove(root) is False
            assert os.path.isdir(_instance_data(root, backend))
            assert [i.state for i in rfs.instances()] == ["removing"]
            rfs.gc()
            assert [i.state for i in rfs.instances()] == ["removing"]
        rfs.gc()
    finally:
        if rfs.instances():
            rfs.gc()
    assert rfs.instances() == []
    assert_base_dir_clean(base_dir)
