"""containerd's snapshots/testsuite behaviours, through gRPC, on each
backend that stacks layers."""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import grpc
import pytest
from conftest import Client, drop_empty_layer, served, start, stop
from google.protobuf import field_mask_pb2
from rootfs_core import RootFS
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.fixtures import remove_scratch, scratch_dir

from rootfs_containerd.api import snapshots_pb2 as pb
from rootfs_containerd.metadata import COMMITTING, PREPARING, Row
from rootfs_containerd.service import Snapshotter

HERE = os.path.dirname(os.path.abspath(__file__))


def write(root: str, path: str, text: str = "x") -> None:
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "w", encoding="utf-8") as fh:
        fh.write(text)


def read(root: str, path: str) -> str:
    with open(os.path.join(root, path), encoding="utf-8") as fh:
        return fh.read()


def code_of(call: object) -> grpc.StatusCode:
    """The status code the call fails with."""
    assert callable(call)
    with pytest.raises(grpc.RpcError) as failed:
        call()
    return failed.value.code()  # type: ignore[no-any-return]


def state(client: Client) -> tuple[list[tuple[str, str, int]], list[str], list[str]]:
    """What a rejected request must leave unchanged: snapshots, instances, layers."""
    rfs = RootFS(client.snapshotter.base_dir, sweep=False)
    infos = sorted((i.name, i.parent, i.kind) for i in client.list())
    return infos, sorted(i.id for i in rfs.instances()), sorted(layer.id for layer in rfs.layers())


def test_prepare_commit_view(client: Client) -> None:
    root = client.prepare("a")
    write(root, "etc/hello", "hello")
    os.symlink("hello", os.path.join(root, "etc/link"))
    client.commit("A", "a", origin="test")
    assert code_of(lambda: client.stat("a")) == grpc.StatusCode.NOT_FOUND
    assert not os.path.exists(root)  # the active one is gone into the layer
    info = client.stat("A")
    assert (info.name, info.parent, info.kind, dict(info.labels)) == (
        "A",
        "",
        pb.COMMITTED,
        {"origin": "test"},
    )
    view = client.view("v", "A")
    assert read(view, "etc/hello") == "hello"
    assert os.readlink(os.path.join(view, "etc/link")) == "hello"
    with pytest.raises(OSError) as refused:
        write(view, "etc/new")
    assert refused.value.errno == errno.EROFS
    (mount,) = client.stub.Mounts(pb.MountsRequest(key="v")).mounts
    assert (mount.source, list(mount.options)) == (view, ["rbind", "ro"])
    assert (
        code_of(lambda: client.stub.Mounts(pb.MountsRequest(key="A"))) == grpc.StatusCode.FAILED_PRECONDITION
    )


def test_stat_of_each_kind(client: Client) -> None:
    client.prepare("a", label="one")
    client.commit("A", "a")
    client.prepare("b", "A")
    client.view("v", "A")
    kinds = {name: (client.stat(name).kind, client.stat(name).parent) for name in ("A", "b", "v")}
    assert kinds == {"A": (pb.COMMITTED, ""), "b": (pb.ACTIVE, "A"), "v": (pb.VIEW, "A")}
    info = client.stat("b")
    assert info.created_at.seconds > 0 and info.updated_at.ToNanoseconds() >= info.created_at.ToNanoseconds()


def test_parents_are_transitive(client: Client) -> None:
    write(client.prepare("a"), "one", "1")
    client.commit("A", "a")
    b = client.prepare("b", "A")
    assert read(b, "one") == "1"
    write(b, "two", "2")
    client.commit("B", "b")
    c = client.prepare("c", "B")
    assert (read(c, "one"), read(c, "two")) == ("1", "2")
    assert client.stat("B").parent == "A"
    assert client.stat("c").parent == "B"


def test_an_intermediate_snapshot_with_children_is_not_removed(client: Client) -> None:
    write(client.prepare("a"), "f")
    client.commit("A", "a")
    client.prepare("b", "A")
    before = state(client)
    assert code_of(lambda: client.remove("A")) == grpc.StatusCode.FAILED_PRECONDITION
    assert state(client) == before
    client.remove("b")
    client.remove("A")
    assert client.list() == []


def test_a_file_deleted_in_a_child_is_gone_from_it_only(client: Client) -> None:
    a = client.prepare("a")
    write(a, "dir/keep")
    write(a, "dir/gone")
    client.commit("A", "a")
    b = client.prepare("b", "A")
    os.unlink(os.path.join(b, "dir/gone"))
    client.commit("B", "b")
    assert sorted(os.listdir(client.view("vb", "B") + "/dir")) == ["keep"]
    assert sorted(os.listdir(client.view("va", "A") + "/dir")) == ["gone", "keep"]


def test_a_lower_file_moved(client: Client) -> None:
    a = client.prepare("a")
    write(a, "dir/file", "content")
    client.commit("A", "a")
    b = client.prepare("b", "A")
    os.rename(os.path.join(b, "dir/file"), os.path.join(b, "moved"))
    client.commit("B", "b")
    view = client.view("v", "B")
    assert read(view, "moved") == "content"
    assert os.listdir(os.path.join(view, "dir")) == []


def test_a_lower_directory_renamed_and_replaced(client: Client) -> None:
    a = client.prepare("a")
    write(a, "old/one", "1")
    write(a, "old/sub/two", "2")
    write(a, "replaced/stale", "s")
    client.commit("A", "a")
    b = client.prepare("b", "A")
    # mv, as a program would: fuse-overlayfs answers a lower directory's rename with EXDEV
    subprocess.run(["mv", os.path.join(b, "old"), os.path.join(b, "new")], check=True)
    subprocess.run(["rm", "-r", os.path.join(b, "replaced")], check=True)
    write(b, "replaced/fresh", "f")
    client.commit("B", "b")
    c = client.prepare("c", "B")  # one more layer on top: the renamed one is portable
    assert not os.path.exists(os.path.join(c, "old"))
    assert (read(c, "new/one"), read(c, "new/sub/two")) == ("1", "2")
    assert os.listdir(os.path.join(c, "replaced")) == ["fresh"]


def test_the_bind_mount_handed_out_is_read_only_for_a_view(client: Client) -> None:
    write(client.prepare("a"), "f", "x")
    client.commit("A", "a")
    client.view("v", "A")
    target = scratch_dir("target-")
    try:
        for key, ro in (("v", True), ("b", False)):
            if key == "b":
                client.prepare("b", "A")
            (mount,) = client.stub.Mounts(pb.MountsRequest(key=key)).mounts
            subprocess.run(
                ["mount", "-t", mount.type, "-o", ",".join(mount.options), mount.source, target], check=True
            )
            try:
                assert read(target, "f") == "x"
                if ro:
                    with pytest.raises(OSError):
                        write(target, "g")
                else:
                    write(target, "g")
            finally:
                LinuxSyscalls().umount(target, UMOUNT_NOFOLLOW)
    finally:
        remove_scratch(target)


def test_labels_updated_by_field_mask(client: Client) -> None:
    client.prepare("a", keep="k", change="c")

    def update(labels: dict[str, str], *paths: str) -> dict[str, str]:
        request = pb.UpdateSnapshotRequest(info=pb.Info(name="a", labels=labels))
        if paths:
            request.update_mask.CopyFrom(field_mask_pb2.FieldMask(paths=list(paths)))
        return dict(client.stub.Update(request).info.labels)

    assert update({"change": "C", "keep": "ignored"}, "labels.change") == {"keep": "k", "change": "C"}
    assert update({}, "labels.change") == {"keep": "k"}
    assert update({"new": "n"}, "labels") == {"new": "n"}
    assert update({"all": "a"}) == {"all": "a"}
    before = client.stat("a")
    for field in ("name", "parent", "kind", "created_at"):
        assert code_of(lambda f=field: update({"x": "y"}, f)) == grpc.StatusCode.INVALID_ARGUMENT
    assert client.stat("a") == before
    assert dict(client.stat("a").labels) == {"all": "a"}
    unknown = pb.UpdateSnapshotRequest(info=pb.Info(name="nope", labels={"a": "b"}))
    assert code_of(lambda: client.stub.Update(unknown)) == grpc.StatusCode.NOT_FOUND


def test_list_walks_everything_and_filters(client: Client) -> None:
    client.prepare("a", **{"containerd.io/gc.root": "yes"})
    client.commit("A", "a", tier="base")
    client.prepare("b", "A")
    client.view("v", "A")
    assert sorted(i.name for i in client.list()) == ["A", "b", "v"]
    assert sorted(i.name for i in client.list("parent==A")) == ["b", "v"]
    assert [i.name for i in client.list('labels."tier"==base')] == ["A"]
    assert [i.name for i in client.list("labels.tier")] == ["A"]
    assert [i.name for i in client.list("kind==view")] == ["v"]
    assert sorted(i.name for i in client.list("kind==view", "kind==committed")) == ["A", "v"]
    assert [i.name for i in client.list("parent==A,kind==active")] == ["b"]
    assert [i.name for i in client.list("name~=^[ab]$")] == ["b"]
    assert code_of(lambda: client.list("parent==A,")) == grpc.StatusCode.INVALID_ARGUMENT


def test_a_full_list_after_changes_shows_them(client: Client) -> None:
    """Unfiltered Lists (the collector's) reuse the Info of a row that did
    not change: an updated label, a commit and a removal all show."""
    client.prepare("a", tier="one")
    client.prepare("b")
    assert {i.name: dict(i.labels) for i in client.list()} == {"a": {"tier": "one"}, "b": {}}
    request = pb.UpdateSnapshotRequest(info=pb.Info(name="a", labels={"tier": "two"}))
    client.stub.Update(request)
    client.commit("B", "b", tier="base")
    assert {i.name: dict(i.labels) for i in client.list()} == {"a": {"tier": "two"}, "B": {"tier": "base"}}
    assert {i.name: i.kind for i in client.list()} == {"a": pb.ACTIVE, "B": pb.COMMITTED}
    client.remove("a")
    assert [i.name for i in client.list()] == ["B"]
    assert [i.name for i in client.list("kind==committed")] == ["B"]


def test_remove_an_active_snapshot(client: Client) -> None:
    root = client.prepare("a")
    write(root, "f")
    client.remove("a")
    # Gone at once; its instance is deleted after the reply.
    assert code_of(lambda: client.stat("a")) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: client.remove("a")) == grpc.StatusCode.NOT_FOUND
    client.snapshotter.settle()
    assert not os.path.exists(root)
    assert RootFS(client.snapshotter.base_dir).instances() == []
    assert client.snapshotter.db.removals() == []


def test_a_removed_key_is_free_at_once(client: Client) -> None:
    write(client.prepare("a"), "f")
    client.commit("A", "a")
    first = client.prepare("a", "A")
    client.remove("a")
    client.remove("A")  # its layer goes after the instance over it
    write(client.prepare("a"), "g")
    client.snapshotter.settle()
    assert not os.path.exists(first)
    assert [i.name for i in client.list()] == ["a"]
    assert [layer.id for layer in RootFS(client.snapshotter.base_dir).layers()] == [
        client.snapshotter.empty_layer
    ]


def test_a_root_in_use_is_deleted_once_it_is_no_longer_used(client: Client) -> None:
    root = client.prepare("a")
    user = subprocess.Popen(["sleep", "60"], cwd=root)
    try:
        client.remove("a")
        client.snapshotter.settle()
        assert os.path.ismount(root)  # refused by the core: in use
        assert code_of(lambda: client.stat("a")) == grpc.StatusCode.NOT_FOUND
        assert len(client.snapshotter.db.removals()) == 1
    finally:
        user.kill()
        user.wait()
    client.stub.Cleanup(pb.CleanupRequest())  # tries it again
    client.snapshotter.settle()
    assert not os.path.exists(root)
    assert client.snapshotter.db.removals() == []


def test_usage_of_each_kind(client: Client) -> None:
    root = client.prepare("a")
    write(root, "big", "x" * (1 << 20))
    size = client.stub.Usage(pb.UsageRequest(key="a"))
    assert size.size >= 1 << 20 and size.inodes >= 1
    client.commit("A", "a")
    committed = client.stub.Usage(pb.UsageRequest(key="A"))
    assert committed.size >= 1 << 20
    client.view("v", "A")
    assert client.stub.Usage(pb.UsageRequest(key="v")).size == 0
    assert code_of(lambda: client.stub.Usage(pb.UsageRequest(key="nope"))) == grpc.StatusCode.NOT_FOUND


def test_bad_requests_change_nothing(client: Client) -> None:
    write(client.prepare("a"), "f")
    client.commit("A", "a")
    client.prepare("b", "A")
    client.view("v", "A")
    before = state(client)
    stub = client.stub
    bad = {
        "empty key": (lambda: client.prepare(""), grpc.StatusCode.INVALID_ARGUMENT),
        "empty view key": (lambda: client.view("", "A"), grpc.StatusCode.INVALID_ARGUMENT),
        "own parent": (lambda: client.prepare("x", "x"), grpc.StatusCode.INVALID_ARGUMENT),
        "key exists": (lambda: client.prepare("b", "A"), grpc.StatusCode.ALREADY_EXISTS),
        "key is committed": (lambda: client.prepare("A"), grpc.StatusCode.ALREADY_EXISTS),
        "no parent": (lambda: client.prepare("x", "nope"), grpc.StatusCode.NOT_FOUND),
        "active parent": (lambda: client.prepare("x", "b"), grpc.StatusCode.INVALID_ARGUMENT),
        "view parent": (lambda: client.view("x", "v"), grpc.StatusCode.INVALID_ARGUMENT),
        "commit unknown": (lambda: client.commit("X", "nope"), grpc.StatusCode.NOT_FOUND),
        "commit a view": (lambda: client.commit("X", "v"), grpc.StatusCode.FAILED_PRECONDITION),
        "commit committed": (lambda: client.commit("X", "A"), grpc.StatusCode.FAILED_PRECONDITION),
        "commit onto a name": (lambda: client.commit("A", "b"), grpc.StatusCode.ALREADY_EXISTS),
        "commit empty name": (lambda: client.commit("", "b"), grpc.StatusCode.INVALID_ARGUMENT),
        "remove unknown": (lambda: client.remove("nope"), grpc.StatusCode.NOT_FOUND),
        "remove empty": (lambda: client.remove(""), grpc.StatusCode.INVALID_ARGUMENT),
        "stat unknown": (lambda: client.stat("nope"), grpc.StatusCode.NOT_FOUND),
        "mounts unknown": (lambda: stub.Mounts(pb.MountsRequest(key="nope")), grpc.StatusCode.NOT_FOUND),
        "huge label": (lambda: client.prepare("x", big="y" * 5000), grpc.StatusCode.INVALID_ARGUMENT),
    }
    for name, (call, expected) in bad.items():
        assert code_of(call) == expected, name
        assert state(client) == before, name


def test_parallel_prepares_and_commits(client: Client) -> None:
    write(client.prepare("a"), "base", "b")
    client.commit("A", "a")
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            root = client.prepare(f"p{n}", "A")
            write(root, f"file{n}", str(n))
            client.commit(f"P{n}", f"p{n}")
            assert read(client.view(f"v{n}", f"P{n}"), f"file{n}") == str(n)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(client.list("kind==committed")) == 9


def test_a_restart_mounts_active_snapshots_again(base_dir: str, sockdir: str, backend: str) -> None:
    """As after a reboot: the mounts are gone, the data and the rows are not."""
    address = os.path.join(sockdir, "s.sock")
    snapshotter, server = start(base_dir, address, backend)
    channel = grpc.insecure_channel("unix:" + address)
    try:
        from rootfs_containerd.api import snapshots_pb2_grpc

        client = Client(snapshots_pb2_grpc.SnapshotsStub(channel), snapshotter, address)
        write(client.prepare("a"), "f", "1")
        client.commit("A", "a")
        root = client.prepare("b", "A")
        write(root, "g", "2")
        view = client.view("v", "A")
        stop(snapshotter, server)
        for point in (root, view):
            LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)
        assert {i.state for i in RootFS(base_dir, sweep=False).instances()} == {"unmounted"}
        snapshotter, server = start(base_dir, address, backend)
        client.snapshotter = snapshotter
        assert (read(root, "f"), read(root, "g"), read(view, "f")) == ("1", "2", "1")
        client.remove_all()
    finally:
        channel.close()
        stop(snapshotter, server)
    drop_empty_layer(base_dir)


def test_start_up_reconciles_what_a_crash_left(base_dir: str, sockdir: str, backend: str) -> None:
    snapshotter = Snapshotter(base_dir, backend)
    rfs = RootFS(base_dir, backend=backend)
    # A prepare killed after its generate, before its row was made ready:
    snapshotter.db.insert(Row("half", "active", None, PREPARING, None, None, 0, 0, 1.0, 1.0, {}))
    stray_root = rfs.generate(snapshotter.empty_layer)
    # A commit killed after publishing its layer, before its rows changed:
    stray_layer = rfs.commit(rfs.generate(snapshotter.empty_layer)).id
    # A commit killed before it: the core may have half made its data a layer.
    committing = rfs.generate(snapshotter.empty_layer)
    committing_id = os.path.basename(os.path.dirname(committing))
    snapshotter.db.insert(
        Row("was-active", "active", None, COMMITTING, committing_id, None, 0, 0, 1.0, 1.0, {})
    )
    snapshotter.db.insert(Row("its-name", "committed", None, PREPARING, None, None, 0, 0, 1.0, 1.0, {}))
    # A removal an earlier version (it removed before replying) was killed in:
    removing = rfs.generate(snapshotter.empty_layer)
    removing_id = os.path.basename(os.path.dirname(removing))
    snapshotter.db.insert(Row("old", "active", None, "removing", removing_id, None, 0, 0, 1.0, 1.0, {}))
    # A row whose layer is gone, and its child:
    snapshotter.db.insert(Row("lost", "committed", None, "ready", None, "0123456789ab", 0, 0, 1.0, 1.0, {}))
    snapshotter.db.insert(
        Row("child", "committed", "lost", "ready", None, "ba9876543210", 0, 0, 1.0, 1.0, {})
    )
    snapshotter.close()
    again = Snapshotter(base_dir, backend)
    try:
        assert again.db.rows() == []
        assert RootFS(base_dir).instances() == []
        assert [layer.id for layer in RootFS(base_dir).layers()] == [again.empty_layer]
        assert not os.path.exists(stray_root) and stray_layer is not None
        assert not os.path.exists(committing)
        assert not os.path.exists(removing) and again.db.removals() == []
    finally:
        again.close()
    drop_empty_layer(base_dir)


def test_cleanup_removes_what_no_snapshot_explains(client: Client) -> None:
    rfs = RootFS(client.snapshotter.base_dir, backend=client.snapshotter.backend)
    stray = rfs.commit(rfs.generate(client.snapshotter.empty_layer)).id
    client.prepare("a")
    client.stub.Cleanup(pb.CleanupRequest())
    assert [layer.id for layer in rfs.layers()] == [client.snapshotter.empty_layer]
    assert stray not in [layer.id for layer in rfs.layers()]
    assert client.stat("a").kind == pb.ACTIVE


@contextlib.contextmanager
def serving(base_dir: str, sockdir: str, backend: str, **options: float) -> Iterator[Client]:
    """``served``, and the base directory left empty after."""
    with served(base_dir, sockdir, backend, **options) as client:
        yield client
    drop_empty_layer(base_dir)


def test_cleanup_reconciles_at_most_once_an_interval(base_dir: str, sockdir: str, backend: str) -> None:
    """Cleanup comes after each of containerd's collections: within
    ``reconcile_every`` of the last reconciliation, it does not read
    everything again (a stray from outside waits), after it, it does."""
    with serving(base_dir, sockdir, backend, reconcile_every=1.0) as client:
        rfs = RootFS(base_dir, backend=backend)
        stray = rfs.commit(rfs.generate(client.snapshotter.empty_layer)).id
        client.prepare("a")
        client.stub.Cleanup(pb.CleanupRequest())  # within a second of start-up's
        assert stray in [layer.id for layer in rfs.layers()]
        time.sleep(1.1)
        client.stub.Cleanup(pb.CleanupRequest())
        assert [layer.id for layer in rfs.layers()] == [client.snapshotter.empty_layer]
        assert client.stat("a").kind == pb.ACTIVE


def test_a_prepare_failed_after_its_generate_makes_the_next_cleanup_reconcile(
    base_dir: str, sockdir: str, backend: str
) -> None:
    with serving(base_dir, sockdir, backend, reconcile_every=3600.0) as client:
        insert = client.snapshotter.db.insert

        def fail(row: Row) -> None:
            raise sqlite3.OperationalError("disk I/O error")

        client.snapshotter.db.insert = fail  # type: ignore[method-assign]
        assert code_of(lambda: client.prepare("a")) == grpc.StatusCode.INTERNAL
        client.snapshotter.db.insert = insert  # type: ignore[method-assign]
        rfs = RootFS(base_dir, sweep=False)
        (left,) = rfs.instances()  # made by the core, named by no row
        assert os.path.ismount(left.root)
        client.stub.Cleanup(pb.CleanupRequest())
        assert rfs.instances() == [] and not os.path.exists(left.root)
        write(client.prepare("a"), "f")
        assert [info.name for info in client.list()] == ["a"]


def test_a_backend_that_cannot_stack_is_refused(base_dir: str) -> None:
    with pytest.raises(RuntimeError, match="stacks layers"):
        Snapshotter(base_dir, "quilt")
    assert not os.path.exists(os.path.join(base_dir, ".rootfs"))


def test_the_generated_modules_are_up_to_date() -> None:
    pytest.importorskip("grpc_tools")
    script = os.path.join(os.path.dirname(HERE), "generate_protos.py")
    if not os.path.exists(script):
        pytest.skip("run from an installed wheel: no generate_protos.py")
    result = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_socket_is_root_s_alone(client: Client) -> None:
    assert stat.S_IMODE(os.stat(client.address).st_mode) & 0o077 == 0


@pytest.mark.parametrize(
    "bad",
    [
        ["--spares", "-1"],
        ["--spare-idle", "0"],
        ["--reconcile-every", "-5"],
        ["--spares", "many"],
        ["--helper-nice", "20"],
        ["--helper-nice", "-1"],
    ],
)
def test_bad_numbers_are_refused_before_anything_starts(sockdir: str, bad: list[str]) -> None:
    base = os.path.join(sockdir, "never-made")
    address = os.path.join(sockdir, "never.sock")
    argv = [sys.executable, "-m", "rootfs_containerd", "--address", address, "--base-dir", base, *bad]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert bad[0] in done.stderr
    assert not os.path.exists(base) and not os.path.exists(address)
