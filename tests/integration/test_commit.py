"""Commit: an instance taken apart into a portable layer (overlay's format),
on every backend, as root.

Round trips: generate -> change (files written, a prototype file deleted,
a directory replaced, a lower directory renamed, hardlinks, xattrs, a device
node, owners and modes) -> commit -> generate(BASE, LAYER) shows the same
tree, file by file, as a walk of the original root taken before the commit;
a committed layer holds no private overlay state; committed layers stack;
the layer store lists and removes layers; DEST rules; busy roots; failures
at every step leave the instance or the layer.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
from collections.abc import Callable, Iterator

import pytest

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core import commit as commit_module
from rootfs_core.commit import OPAQUE, private_xattrs
from rootfs_core.testing.checks import instance_mounts, tree_checksum
from rootfs_core.testing.faults import FaultySyscalls

MakePrototype = Callable[..., str]
Scratch = Callable[[str], str]
LAYERED = ("overlayfs", "fuse-overlayfs")
ALL = ("overlayfs", "fuse-overlayfs", "quilt")


def _probe_or_skip(base_dir: str, name: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("real mounts, whiteouts and opaque directories need root")
    probe = RootFS(base_dir, backend=name).probe(name)
    if not probe.supported:
        if name in ("overlayfs", "quilt"):
            pytest.fail(f"{name} must work here, but its probe says: {probe.reason}")
        pytest.skip(f"{name} is not supported here: {probe.reason}")


@pytest.fixture(params=ALL)
def backend(request: pytest.FixtureRequest, base_dir: str) -> str:
    name: str = request.param
    _probe_or_skip(base_dir, name)
    return name


@pytest.fixture(params=LAYERED)
def layered(request: pytest.FixtureRequest, base_dir: str) -> str:
    name: str = request.param
    _probe_or_skip(base_dir, name)
    return name


@pytest.fixture
def cleanup(base_dir: str) -> Iterator[None]:
    """Whatever instance or stored layer a failed test left is removed
    before the base directory's own check."""
    yield
    rfs = RootFS(base_dir, backend="overlayfs")
    for instance in rfs.instances():
        rfs.remove(instance.root)
    for layer in rfs.layers():
        rfs.remove_layer(layer.id)


# ------------------------------------------------------------------ helpers
def snapshot(top: str) -> dict[str, object]:
    """Everything a root shows, by relative path: type, mode, owner, size,
    content digest, symlink target, device number, user xattrs, mtime of
    non-directories; and which names are one file (hardlink groups)."""
    entries: dict[str, object] = {}
    inodes: dict[int, list[str]] = {}
    base = os.fsencode(top)
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        for name in [b".", *dirnames, *sorted(filenames)]:
            full = dirpath if name == b"." else os.path.join(dirpath, name)
            rel = os.path.relpath(full, base).decode(errors="surrogateescape")
            st = os.lstat(full)
            item: list[object] = [stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid]
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as fh:
                    item += [hashlib.sha256(fh.read()).hexdigest(), st.st_mtime_ns]
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                item.append(os.readlink(full))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                item.append(st.st_rdev)
            if not stat.S_ISLNK(st.st_mode):
                keys = sorted(k for k in os.listxattr(full, follow_symlinks=False) if k.startswith("user."))
                item += [(k, os.getxattr(full, k, follow_symlinks=False)) for k in keys]
            entries[rel] = item
    groups = sorted(sorted(names) for names in inodes.values() if len(names) > 1)
    entries["<hardlinks>"] = groups
    return entries


def assert_same(before: dict[str, object], after: dict[str, object], *, mtimes: bool = True) -> None:
    """The two snapshots agree; without ``mtimes`` files' mtimes are not
    compared (a FUSE root shows a written file's mtime from the kernel's
    attribute cache, which may lag the upper's by milliseconds)."""
    if not mtimes:
        before, after = _without_mtimes(before), _without_mtimes(after)
    missing = sorted(set(before) - set(after))
    extra = sorted(set(after) - set(before))
    differ = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    details = {k: (before[k], after[k]) for k in differ[:5]}
    assert not (missing or extra or differ), f"missing {missing}, extra {extra}, differing {details}"


def _without_mtimes(shot: dict[str, object]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, item in shot.items():
        if isinstance(item, list) and item and item[0] == stat.S_IFREG:
            item = item[:5] + item[6:]
        out[key] = item
    return out


def write(path: str, content: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(content)


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def rename(source: str, target: str) -> None:
    """rename(2), or what mv does where it says EXDEV (fuse-overlayfs, for a
    lower directory): copy, then delete."""
    try:
        os.rename(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        subprocess.run(["mv", "-T", "--", source, target], check=True)


def change_union(root: str) -> None:
    """Every kind of change, in a root whose every directory is writable."""
    write(f"{root}/etc/new", b"new\n")
    write(f"{root}/etc/hostname", b"changed\n")  # a prototype hardlink, written through one name
    os.unlink(f"{root}/etc/passwd")  # a prototype file deleted
    os.unlink(f"{root}/usr/bin/tool")  # the directory replaced below
    os.rmdir(f"{root}/usr/bin")
    os.mkdir(f"{root}/usr/bin", 0o750)
    write(f"{root}/usr/bin/only-new", b"new bin\n")
    rename(f"{root}/usr/lib", f"{root}/usr/lib-moved")  # an empty lower directory renamed
    rename(f"{root}/etc/deep", f"{root}/deep-moved")  # a lower directory with content renamed
    write(f"{root}/deep-moved/er/added", b"added after the rename\n")
    os.link(f"{root}/etc/new", f"{root}/home/new-link")  # a new hardlink
    os.setxattr(f"{root}/etc/new", "user.comment", b"kept")
    os.mknod(f"{root}/dev/null2", 0o620 | stat.S_IFCHR, os.makedev(1, 3))
    os.chown(f"{root}/home/readme", 1234, 5678)
    os.chmod(f"{root}/var/log.txt", 0o600)
    os.mkdir(f"{root}/opt")
    os.symlink("../etc/new", f"{root}/opt/link")


def change_quilt(root: str) -> None:
    """The same kinds of change, inside a quilt's writable directories."""
    write(f"{root}/etc/new", b"new\n")
    write(f"{root}/etc/hostname", b"changed\n")
    os.unlink(f"{root}/etc/passwd")
    os.unlink(f"{root}/var/log.txt")
    os.unlink(f"{root}/var/sock")
    os.rename(f"{root}/etc/deep", f"{root}/etc/deep-moved")
    write(f"{root}/etc/deep-moved/er/added", b"added\n")
    os.link(f"{root}/etc/new", f"{root}/etc/new-link")
    os.setxattr(f"{root}/etc/new", "user.comment", b"kept")
    os.mknod(f"{root}/dev/null2", 0o620 | stat.S_IFCHR, os.makedev(1, 3))
    os.chown(f"{root}/home/readme", 1234, 5678)
    os.chmod(f"{root}/etc/hostname", 0o600)
    write(f"{root}/tmp/scratch", b"tmp\n")


def overlay_state(layer: str) -> list[str]:
    """Private overlay state in a layer, and redirects anywhere."""
    return private_xattrs(layer)


def is_whiteout(path: str) -> bool:
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# ---------------------------------------------------------------- round trips
def test_round_trip_through_the_store(
    backend: str, base_dir: str, make_prototype: MakePrototype, cleanup: None
) -> None:
    """generate -> change -> commit -> generate(BASE, LAYER id) shows the
    same tree as the original root did, on overlayfs and (for the second
    root) on every layered backend."""
    prototype = make_prototype()
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(prototype)
    (change_quilt if backend == "quilt" else change_union)(root)
    before = snapshot(root)
    result = rfs.commit(root)
    assert result.id is not None and result.layer == os.path.join(base_dir, ".rootfs/layers", result.id)
    assert result.bytes > 0 and result.inodes > 0 and result.seconds >= 0
    assert rfs.instances() == [] and instance_mounts(base_dir) == []
    assert overlay_state(result.layer) == []
    for viewer in LAYERED:
        if viewer != "overlayfs" and not RootFS(base_dir, backend=viewer).probe(viewer).supported:
            continue
        again = RootFS(base_dir, backend=viewer)
        second = again.generate(prototype, result.id)
        [instance] = again.instances()
        assert instance.layers == [prototype, result.layer]  # the real path, not the id
        assert_same(before, snapshot(second), mtimes="fuse-overlayfs" not in (backend, viewer))
        again.remove(second)
    [listed] = rfs.layers()
    assert (listed.id, listed.path, listed.instances) == (result.id, result.layer, [])
    rfs.remove_layer(result.id)
    assert rfs.layers() == []


def test_round_trip_to_a_destination(
    backend: str, base_dir: str, make_prototype: MakePrototype, scratch: Scratch, cleanup: None
) -> None:
    """DEST on the base directory's filesystem but another mount (a copy
    under a temporary name, renamed) holds the layer, in overlay's format."""
    prototype = make_prototype()
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(prototype)
    (change_quilt if backend == "quilt" else change_union)(root)
    before = snapshot(root)
    dest = os.path.join(scratch("dest-"), "layer")
    result = rfs.commit(root, dest)
    assert (result.layer, result.id) == (dest, None)
    assert os.listdir(os.path.dirname(dest)) == ["layer"], "a temporary was left beside DEST"
    assert overlay_state(dest) == []
    if backend == "quilt":
        assert not os.path.lexists(f"{dest}/etc/passwd")  # etc is opaque: a whole directory
        assert os.getxattr(f"{dest}/etc", OPAQUE) == b"y"
        assert os.getxattr(f"{dest}/tmp", OPAQUE) == b"y"
    else:
        assert is_whiteout(f"{dest}/etc/passwd")
        assert os.getxattr(f"{dest}/deep-moved", OPAQUE) == b"y"  # materialised, opaque
        assert is_whiteout(f"{dest}/etc/deep") and is_whiteout(f"{dest}/usr/lib")
        assert os.getxattr(f"{dest}/usr/bin", OPAQUE) == b"y"
        assert not any(n.startswith(".wh.") for _, _, names in os.walk(dest) for n in names)
    second = RootFS(base_dir, backend="overlayfs").generate(prototype, dest)
    assert_same(before, snapshot(second), mtimes=backend != "fuse-overlayfs")
    RootFS(base_dir).remove(second)


def test_a_prototype_hardlink_written_through_one_name_stays_one_file(
    layered: str, base_dir: str, make_prototype: MakePrototype, cleanup: None
) -> None:
    """Overlay's index shows the written content under the name that was
    not written: the layer carries that name as a hardlink."""
    prototype = make_prototype()
    rfs = RootFS(base_dir, backend=layered)
    root = rfs.generate(prototype)
    write(f"{root}/etc/hostname", b"through one name\n")
    shown = read(f"{root}/etc/hostname.link")
    result = rfs.commit(root)
    second = rfs.generate(prototype, result.id)
    assert read(f"{second}/etc/hostname.link") == shown
    assert os.lstat(f"{second}/etc/hostname").st_ino == os.lstat(f"{second}/etc/hostname.link").st_ino
    rfs.remove(second)


@pytest.mark.parametrize("under", LAYERED)
def test_committed_layers_stack(
    layered: str, under: str, base_dir: str, make_prototype: MakePrototype, cleanup: None
) -> None:
    """Commit over a committed layer, with renames at each level (an empty
    lower directory renamed too), and stack both under every layered
    backend: the view is the last root's."""
    if not RootFS(base_dir, backend=under).probe(under).supported:
        pytest.skip(f"{under} is not supported here")
    prototype = make_prototype()
    rfs = RootFS(base_dir, backend=layered)
    first = rfs.generate(prototype)
    change_union(first)
    one = rfs.commit(first)
    second = rfs.generate(prototype, one.id)
    rename(f"{second}/deep-moved", f"{second}/deep-again")  # a directory of the layer renamed
    rename(f"{second}/usr/lib-moved", f"{second}/usr/lib-back")  # an empty one
    os.mkdir(f"{second}/empty-new")
    rename(f"{second}/empty-new", f"{second}/empty-renamed")
    write(f"{second}/usr/bin/second", b"2\n")
    os.unlink(f"{second}/etc/new")
    before = snapshot(second)
    two = rfs.commit(second)
    assert overlay_state(two.layer) == []
    viewer = RootFS(base_dir, backend=under)
    third = viewer.generate(prototype, one.id, two.id)
    assert_same(before, snapshot(third), mtimes="fuse-overlayfs" not in (layered, under))
    third_id = os.path.basename(os.path.dirname(third))
    assert {layer.id: layer.instances for layer in rfs.layers()} == {one.id: [third_id], two.id: [third_id]}
    viewer.remove(third)


def test_normalises_fuse_overlayfs_forms(tmp_path_factory: pytest.TempPathFactory) -> None:
    """.wh.NAME files, .wh..wh..opq files and .wh..opq devices (fuse-overlayfs,
    aufs) become overlay's whiteouts and opaque marks; private attributes go."""
    if os.geteuid() != 0:
        pytest.skip("whiteouts are device nodes")
    top = str(tmp_path_factory.mktemp("upper"))
    os.makedirs(f"{top}/d/sub")
    write(f"{top}/.wh.gone", b"")
    write(f"{top}/d/.wh..wh..opq", b"")
    os.mknod(f"{top}/d/sub/.wh..opq", stat.S_IFCHR | 0o700, os.makedev(0, 0))
    write(f"{top}/d/file", b"x")
    os.setxattr(f"{top}/d/file", "user.fuseoverlayfs.origin", b"x")
    os.setxattr(f"{top}/d/file", "user.kept", b"y")
    os.setxattr(f"{top}/d", "trusted.overlay.origin", b"x")
    commit_module.normalise(top, aufs_style=True)
    assert is_whiteout(f"{top}/gone") and not os.path.lexists(f"{top}/.wh.gone")
    assert os.listdir(f"{top}/d/sub") == []
    assert os.getxattr(f"{top}/d", OPAQUE) == b"y" and os.getxattr(f"{top}/d/sub", OPAQUE) == b"y"
    assert os.listxattr(f"{top}/d/file") == ["user.kept"]
    assert private_xattrs(top) == []


# ---------------------------------------------------------------- the store
def test_a_layer_in_use_is_not_removed(base_dir: str, make_prototype: MakePrototype, cleanup: None) -> None:
    _probe_or_skip(base_dir, "overlayfs")
    prototype = make_prototype()
    rfs = RootFS(base_dir, backend="overlayfs")
    root = rfs.generate(prototype)
    write(f"{root}/etc/new", b"new\n")
    layer = rfs.commit(root)
    user = rfs.generate(prototype, layer.id)
    [listed] = rfs.layers()
    assert listed.instances == [rfs.instance(user).id]  # type: ignore[union-attr]
    checksum = tree_checksum(layer.layer)
    with pytest.raises(RootFSError) as refused:
        rfs.remove_layer(layer.id)
    assert refused.value.error_id is ErrorId.ErrLayerInUse
    assert tree_checksum(layer.layer) == checksum
    with pytest.raises(RootFSError) as missing:
        rfs.remove_layer("0123456789ab")
    assert missing.value.error_id is ErrorId.ErrNoSuchLayer
    rfs.remove(user)
    rfs.remove_layer(layer.id)
    assert not os.path.lexists(layer.layer) and rfs.layers() == []


def test_gc_sweeps_the_work_directory_of_a_dead_commit(
    base_dir: str, make_prototype: MakePrototype, cleanup: None
) -> None:
    _probe_or_skip(base_dir, "overlayfs")
    rfs = RootFS(base_dir, backend="overlayfs")
    root = rfs.generate(make_prototype())
    store = os.path.join(base_dir, ".rootfs", "layers")
    os.makedirs(store, mode=0o700, exist_ok=True)
    stray = os.path.join(store, ".tmp-0123456789ab.999999999")
    os.makedirs(f"{stray}/m0")
    report = rfs.gc()
    assert stray in report.orphans and not os.path.lexists(stray)
    rfs.remove(root)


# ---------------------------------------------------------------- refusals
def test_destination_rules(
    base_dir: str, make_prototype: MakePrototype, scratch: Scratch, cleanup: None
) -> None:
    """DEST existing, inside the base directory, inside the layer store,
    inside a layer, without its parent: ErrLayerDest, the instance ready and
    unchanged, nothing made."""
    _probe_or_skip(base_dir, "overlayfs")
    prototype = make_prototype(mutable=True)
    rfs = RootFS(base_dir, backend="overlayfs")
    root = rfs.generate(prototype)
    write(f"{root}/etc/new", b"new\n")
    holder = scratch("dest-")
    os.mkdir(f"{holder}/exists")
    before = snapshot(root)
    for dest in (
        f"{holder}/exists",
        f"{base_dir}/layer",
        f"{base_dir}/.rootfs/layers/x",
        f"{prototype}/inside",
        f"{holder}/missing/layer",
    ):
        with pytest.raises(RootFSError) as refused:
            rfs.commit(root, dest)
        assert refused.value.error_id is ErrorId.ErrLayerDest, dest
        assert [i.state for i in rfs.instances()] == ["ready"]
        assert_same(before, snapshot(root))
    assert os.listdir(holder) == ["exists"] and not os.path.lexists(f"{prototype}/inside")
    rfs.remove(root)


def test_a_busy_root_is_refused_untouched(
    backend: str, base_dir: str, make_prototype: MakePrototype, scratch: Scratch, cleanup: None
) -> None:
    prototype = make_prototype()
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(prototype)
    write(f"{root}/etc/new", b"new\n")
    before = snapshot(root)
    holder = subprocess.Popen(["sleep", "60"], cwd=f"{root}/etc")
    try:
        dest = os.path.join(scratch("dest-"), "layer")
        with pytest.raises(RootFSError) as refused:
            rfs.commit(root, dest)
        assert refused.value.error_id is ErrorId.ErrRootBusy
        assert not os.path.lexists(dest) and os.listdir(os.path.dirname(dest)) == []
        assert [i.state for i in rfs.instances()] == ["ready"]
        assert_same(before, snapshot(root))
    finally:
        holder.kill()
        holder.wait()
    rfs.remove(root)


def test_a_read_only_view_has_nothing_to_commit(
    layered: str, base_dir: str, make_prototype: MakePrototype, cleanup: None
) -> None:
    rfs = RootFS(base_dir, backend=layered)
    view = rfs.generate(make_prototype(), read_only=True)
    with pytest.raises(RootFSError) as refused:
        rfs.commit(view)
    assert refused.value.error_id is ErrorId.ErrUnsupportedRequest
    rfs.remove(view)


# ---------------------------------------------------------------- failures
def _commit_failing_at(
    base_dir: str, backend: str, prototype: str, dest: str, number: int, error: int = errno.EIO
) -> tuple[RootFS, bool, list[object]]:
    """Commit with call ``number`` (1-based, counted from the commit) failing;
    returns the RootFS, whether it failed, and the calls made."""
    faulty = FaultySyscalls()
    rfs = RootFS(base_dir, backend=backend, syscalls=faulty)
    root = rfs.generate(prototype)
    change_union(root) if backend != "quilt" else change_quilt(root)
    faulty.calls.clear()
    faulty.fail_on = {number}
    try:
        rfs.commit(root, dest)
    except RootFSError:
        return rfs, True, list(faulty.calls)
    return rfs, False, list(faulty.calls)


def test_a_failure_at_each_step_leaves_the_instance_or_the_layer(
    backend: str, base_dir: str, make_prototype: MakePrototype, scratch: Scratch, cleanup: None
) -> None:
    """Each changing call of a commit fails in turn: the instance is still
    there (ready, or unmounted with its data, and remove takes it apart),
    or the layer is whole at DEST; never a temporary, never a half layer."""
    prototype = make_prototype()
    holder = scratch("dest-")
    dest = os.path.join(holder, "layer")
    rfs, failed, calls = _commit_failing_at(base_dir, backend, prototype, dest, 0)
    assert not failed and calls
    LinuxTree.delete(dest)
    for number in range(1, len(calls) + 1):
        rfs, failed, _ = _commit_failing_at(base_dir, backend, prototype, dest, number)
        assert os.listdir(holder) in ([], ["layer"]), f"call {number}: {os.listdir(holder)}"
        instances = rfs.instances()
        if os.path.lexists(dest):
            assert overlay_state(dest) == []
            LinuxTree.delete(dest)
        else:
            assert failed
            assert [i.state for i in instances] in (["ready"], ["unmounted"]), f"call {number}"
        for instance in RootFS(base_dir).instances():
            RootFS(base_dir).remove(instance.root)
        assert RootFS(base_dir).gc().failed == {}
        store = os.path.join(base_dir, ".rootfs", "layers")
        left = os.listdir(store)
        # Only the failing deletion of the work directory itself leaves it:
        # this process is alive, so gc rightly waits for it.
        assert left in ([], [f".tmp-{name.split('-')[1].split('.')[0]}.{os.getpid()}" for name in left])
        for name in left:
            LinuxTree.delete(os.path.join(store, name))


class LinuxTree:
    @staticmethod
    def delete(path: str) -> None:
        from rootfs_core.syscalls import LinuxSyscalls

        if os.path.lexists(path):
            LinuxSyscalls().remove_tree(path)


def test_a_failing_rename_or_attribute_change_keeps_the_instance(
    monkeypatch: pytest.MonkeyPatch, base_dir: str, make_prototype: MakePrototype, cleanup: None
) -> None:
    """The operations beyond Syscalls (rename, xattrs, links) failing: the
    instance is kept, unmounted, its record naming what is left, and a
    second commit (nothing left needs the mounted root) finishes the job."""
    _probe_or_skip(base_dir, "overlayfs")
    prototype = make_prototype()
    rfs = RootFS(base_dir, backend="overlayfs")
    for method in ("rename_noreplace", "removexattr"):
        root = rfs.generate(prototype)
        write(f"{root}/etc/new", b"new\n")
        os.unlink(f"{root}/etc/passwd")
        failing = commit_module.Ops()

        def fail(*args: object) -> None:
            raise OSError(errno.EIO, "injected")

        monkeypatch.setattr(failing, method, fail)
        monkeypatch.setattr(commit_module, "OPS", failing)
        with pytest.raises(RootFSError) as failed:
            rfs.commit(root)
        assert failed.value.error_id is ErrorId.ErrCommit
        assert [i.state for i in rfs.instances()] == ["unmounted"]
        assert rfs.layers() == []
        monkeypatch.setattr(commit_module, "OPS", commit_module.Ops())
        result = rfs.commit(root)
        assert rfs.instances() == [] and overlay_state(result.layer) == []
        second = rfs.generate(prototype, result.id)
        assert read(f"{second}/etc/new") == b"new\n" and not os.path.lexists(f"{second}/etc/passwd")
        rfs.remove(second)
        rfs.remove_layer(result.id)


# ---------------------------------------------------------------- command line
def test_the_command_line_handlers(
    base_dir: str, make_prototype: MakePrototype, capsys: pytest.CaptureFixture[str], cleanup: None
) -> None:
    """``rootfs commit --json``, ``layers --json``/``-q``, ``layer rm``
    through the command's own entry point."""
    import json

    from rootfs_core import cli

    _probe_or_skip(base_dir, "overlayfs")

    def run(*argv: str) -> str:
        assert cli.main(["--base-dir", base_dir, *argv]) == 0
        return capsys.readouterr().out

    rfs = RootFS(base_dir, backend="overlayfs")
    root = rfs.generate(make_prototype())
    write(f"{root}/etc/new", b"new\n")
    made = json.loads(run("commit", root, "--json"))
    assert set(made) == {"layer", "bytes", "inodes", "seconds", "id"}
    [listed] = json.loads(run("layers", "--json"))
    assert (listed["id"], listed["path"], listed["instances"]) == (made["id"], made["layer"], [])
    assert run("layers", "-q").split() == [made["id"]]
    assert json.loads(run("layer", "rm", made["id"], "--json")) == {"id": made["id"], "removed": True}
    assert run("layers", "-q") == ""


# ---------------------------------------------------------------- killed commits
@pytest.mark.parametrize("where", ["before publishing", "after publishing"])
def test_a_killed_commit_leaves_the_instance_or_the_layer(
    base_dir: str, make_prototype: MakePrototype, cleanup: None, scratch: Callable[[str], str], where: str
) -> None:
    """SIGKILL inside a commit: before its layer is published, the sweep
    keeps the instance, unmounted, with what was written in it (never swept
    away); after, the layer is whole at its destination and the sweep takes
    the rest of the instance apart."""
    import signal

    _probe_or_skip(base_dir, "overlayfs")
    rfs = RootFS(base_dir, backend="overlayfs")
    root = rfs.generate(make_prototype())
    write(f"{root}/etc/written", b"kept\n")
    dest = os.path.join(scratch("dest-"), "layer")
    pid = os.fork()
    if pid == 0:  # the commit, killed at the chosen moment
        try:
            from rootfs_core.store import Store

            publish, committed = commit_module._publish, Store.mark_committed

            def killed_publish(*args: object, **kwargs: object) -> None:
                if where == "before publishing":
                    os.kill(os.getpid(), signal.SIGKILL)
                publish(*args, **kwargs)  # type: ignore[arg-type]

            def killed_committed(store: Store, record: object) -> None:
                committed(store, record)  # type: ignore[arg-type]
                os.kill(os.getpid(), signal.SIGKILL)

            commit_module._publish = killed_publish  # type: ignore[assignment]
            Store.mark_committed = killed_committed  # type: ignore[assignment]
            RootFS(base_dir).commit(root, dest)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), "the commit was not killed"
    report = RootFS(base_dir, sweep=False).gc()
    assert report.failed == {}, report
    if where == "before publishing":
        assert not os.path.lexists(dest)
        [instance] = RootFS(base_dir).instances()
        assert instance.state == "unmounted"
        upper = os.path.join(os.path.dirname(root), "upper")
        with open(os.path.join(upper, "etc", "written"), "rb") as fh:
            assert fh.read() == b"kept\n"
        assert RootFS(base_dir).remove(root) is True
    else:
        with open(os.path.join(dest, "etc", "written"), "rb") as fh:
            assert fh.read() == b"kept\n"
        assert RootFS(base_dir).instances() == []
    assert instance_mounts(base_dir) == []
