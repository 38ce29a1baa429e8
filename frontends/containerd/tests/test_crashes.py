"""SIGKILL of the snapshotter mid-operation, and clients that go away."""

from __future__ import annotations

import ctypes
import os
import platform
import random
import signal
import time

import grpc
import pytest
from conftest import Client, drop_empty_layer, recorded, start_process, stop_process
from rootfs_core import RootFS
from rootfs_core.testing.checks import instance_mounts

from rootfs_containerd.api import snapshots_pb2 as pb
from rootfs_containerd.api import snapshots_pb2_grpc

SYS_TGKILL = {"x86_64": 234, "aarch64": 131}  # tgkill(2): a signal to one thread of a process


def test_a_client_that_gives_up_mid_call_leaves_a_consistent_state(client: Client) -> None:
    for n in range(5):
        try:
            client.stub.Prepare(pb.PrepareSnapshotRequest(key=f"k{n}"), timeout=0.001)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(1)  # the server finishes what it began
    rows = {row.key: row for row in client.snapshotter.db.rows()}
    assert all(row.state == "ready" for row in rows.values())
    instances = {i.id for i in RootFS(client.snapshotter.base_dir, sweep=False).instances()}
    assert instances == {row.instance for row in rows.values()}


def test_sigkill_at_any_moment_then_restart(base_dir: str, sockdir: str, backend: str) -> None:
    """Kill the snapshotter while prepares, commits and removes run; after a
    restart every listed snapshot is usable and nothing else is left."""
    seed = int(os.environ.get("ROOTFS_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    address = os.path.join(sockdir, "kill.sock")
    proc = start_process(base_dir, address, backend)
    try:
        for round_ in range(4):
            channel = grpc.insecure_channel("unix:" + address)
            stub = snapshots_pb2_grpc.SnapshotsStub(channel)
            futures = []
            for n in range(6):
                key = f"r{round_}-{n}"
                futures.append(stub.Prepare.future(pb.PrepareSnapshotRequest(key=key)))
            time.sleep(rng.uniform(0.0, 0.3))
            for n in range(3):
                futures.append(
                    stub.Commit.future(pb.CommitSnapshotRequest(name=f"C{round_}-{n}", key=f"r{round_}-{n}"))
                )
                futures.append(stub.Remove.future(pb.RemoveSnapshotRequest(key=f"r{round_}-{n + 3}")))
            time.sleep(rng.uniform(0.0, 0.3))
            proc.kill()
            proc.wait()
            channel.close()
            os.unlink(address)
            proc = start_process(base_dir, address, backend)
            channel = grpc.insecure_channel("unix:" + address)
            client = Client(snapshots_pb2_grpc.SnapshotsStub(channel), None, address)  # type: ignore[arg-type]
            for info in client.list():
                if info.kind == pb.ACTIVE:
                    (mount,) = client.stub.Mounts(pb.MountsRequest(key=info.name)).mounts
                    assert os.path.ismount(mount.source), f"seed {seed}"
                    with open(os.path.join(mount.source, "probe"), "w") as fh:
                        fh.write("x")
            channel.close()
        channel = grpc.insecure_channel("unix:" + address)
        client = Client(snapshots_pb2_grpc.SnapshotsStub(channel), None, address)  # type: ignore[arg-type]
        client.remove_all()
        channel.close()
    finally:
        stop_process(proc)
    # A writer killed inside a record rewrite leaves its temporary file,
    # which gc deletes (as the boot-time unit does): nothing else is left.
    assert RootFS(base_dir, sweep=False).gc().failed == {}, f"seed {seed}"
    rfs = RootFS(base_dir)
    assert rfs.instances() == [], f"seed {seed}"
    assert len(rfs.layers()) == 1, f"seed {seed}"
    drop_empty_layer(base_dir)


def test_sigkill_right_after_removes_then_restart(base_dir: str, sockdir: str, backend: str) -> None:
    """Removes reply before their instances and layers are deleted: killed
    right after the replies, the snapshotter leaves roots mounted and
    removals recorded; started again, it finishes them before it serves,
    leaving nothing mounted and nothing stored."""
    address = os.path.join(sockdir, "kill.sock")
    proc = start_process(base_dir, address, backend)
    try:
        channel = grpc.insecure_channel("unix:" + address)
        client = Client(snapshots_pb2_grpc.SnapshotsStub(channel), None, address)  # type: ignore[arg-type]
        root = client.prepare("a")
        with open(os.path.join(root, "f"), "w") as fh:
            fh.write("x")
        client.commit("A", "a")
        keys = [f"k{n}" for n in range(8)]
        for key in keys:
            client.prepare(key, "A")
        client.view("v", "A")
        removes = [client.stub.Remove.future(pb.RemoveSnapshotRequest(key=key)) for key in [*keys, "v"]]
        for future in removes:
            future.result()
        client.remove("A")
        proc.kill()
        proc.wait()
        channel.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    rows, pending = recorded(base_dir)
    assert rows == []
    kinds = {what for what, _ in pending}
    assert "layer" in kinds, "the kill came after every removal was done: nothing tested"
    os.unlink(address)
    proc = start_process(base_dir, address, backend)
    try:
        assert instance_mounts(base_dir) == []
        rfs = RootFS(base_dir, sweep=False)
        assert rfs.instances() == []
        assert len(rfs.layers()) == 1  # the empty layer alone
    finally:
        stop_process(proc)
    drop_empty_layer(base_dir)


@pytest.mark.skipif(platform.machine() not in SYS_TGKILL, reason="tgkill's number is known for two arches")
def test_sigterm_received_by_any_thread_stops_it(base_dir: str, sockdir: str, backend: str) -> None:
    """The kernel gives a process's signal to any of its threads; Python
    runs the handler in the main thread only, so a main thread asleep in a
    wait without a timeout never saw a SIGTERM another thread took. Here
    three of its other threads in turn get the SIGTERM (tgkill), each in a
    fresh snapshotter, which must stop cleanly."""
    address = os.path.join(sockdir, "term.sock")
    libc = ctypes.CDLL(None, use_errno=True)
    for turn in range(3):
        proc = start_process(base_dir, address, backend)
        try:
            with grpc.insecure_channel("unix:" + address) as channel:  # the gRPC threads are up
                list(snapshots_pb2_grpc.SnapshotsStub(channel).List(pb.ListSnapshotsRequest()))
            others = sorted(int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid)
            assert others, "the snapshotter has no thread but its main one"
            target = others[turn % len(others)]
            number = SYS_TGKILL[platform.machine()]
            assert libc.syscall(number, proc.pid, target, signal.SIGTERM) == 0, ctypes.get_errno()
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert not os.path.exists(address)
    assert instance_mounts(base_dir) == []
    drop_empty_layer(base_dir)
