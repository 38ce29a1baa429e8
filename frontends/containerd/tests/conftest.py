"""A snapshotter served on a temporary unix socket, and a client stub."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import grpc
import pytest
from rootfs_core.testing.fixtures import remove_scratch, scratch_dir

from rootfs_containerd.api import snapshots_pb2 as pb
from rootfs_containerd.api import snapshots_pb2_grpc
from rootfs_containerd.server import serve
from rootfs_containerd.service import Snapshotter


class Client:
    """The stub, plus what a test needs to look behind it."""

    def __init__(
        self, stub: snapshots_pb2_grpc.SnapshotsStub, snapshotter: Snapshotter, address: str
    ) -> None:
        self.stub = stub
        self.snapshotter = snapshotter
        self.address = address

    def prepare(self, key: str, parent: str = "", **labels: str) -> str:
        reply = self.stub.Prepare(pb.PrepareSnapshotRequest(key=key, parent=parent, labels=labels))
        (mount,) = reply.mounts
        assert (mount.type, list(mount.options)) == ("bind", ["rbind", "rw"])
        return str(mount.source)

    def view(self, key: str, parent: str) -> str:
        (mount,) = self.stub.View(pb.ViewSnapshotRequest(key=key, parent=parent)).mounts
        assert (mount.type, list(mount.options)) == ("bind", ["rbind", "ro"])
        return str(mount.source)

    def commit(self, name: str, key: str, **labels: str) -> None:
        self.stub.Commit(pb.CommitSnapshotRequest(name=name, key=key, labels=labels))

    def remove(self, key: str) -> None:
        self.stub.Remove(pb.RemoveSnapshotRequest(key=key))

    def stat(self, key: str) -> pb.Info:
        return self.stub.Stat(pb.StatSnapshotRequest(key=key)).info

    def list(self, *filters: str) -> list[pb.Info]:
        return [
            info for reply in self.stub.List(pb.ListSnapshotsRequest(filters=filters)) for info in reply.info
        ]

    def remove_all(self) -> None:
        """Every snapshot, children first."""
        while True:
            infos = self.list()
            if not infos:
                return
            parents = {info.parent for info in infos}
            for info in infos:
                if info.name not in parents:
                    self.remove(info.name)


BACKENDS = ["overlayfs", "fuse-overlayfs"]


def start(
    base: str, address: str, backend: str | None = None, **options: Any
) -> tuple[Snapshotter, grpc.Server]:
    """A snapshotter (``options``: its keyword arguments) served at ``address``."""
    snapshotter = Snapshotter(base, backend, **options)
    return snapshotter, serve(address, snapshotter, workers=8)


def stop(snapshotter: Snapshotter, server: grpc.Server) -> None:
    server.stop(None).wait()
    snapshotter.close()


def start_process(
    base: str, address: str, backend: str, *extra: str, stderr: IO[bytes] | None = None
) -> subprocess.Popen[bytes]:
    """``rootfs-snapshotter`` (with ``extra`` arguments) as a process of its
    own, for tests that kill it; returned once it listens. Its log goes to
    ``stderr`` (by default nowhere)."""
    command = [sys.executable, "-m", "rootfs_containerd", "--address", address, "--base-dir", base]
    out = subprocess.DEVNULL if stderr is None else stderr
    proc = subprocess.Popen([*command, "--backend", backend, *extra], stderr=out)
    deadline = time.monotonic() + 30
    while not os.path.exists(address):
        assert proc.poll() is None and time.monotonic() < deadline, "the snapshotter did not start"
        time.sleep(0.05)
    return proc


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, as systemd stops it; SIGKILL after a minute."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def recorded(base: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The snapshotter's database as it is on disk (read-only, so a killed
    one's is seen as the kill left it): the rows' keys, and the removals
    still to do (what, id)."""
    path = os.path.join(base, ".rootfs", "containerd", "snapshots.db")
    database = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        keys = [str(key) for (key,) in database.execute("SELECT key FROM snapshots")]
        found = database.execute("SELECT what, id FROM removals")
        removals = [(str(what), str(ident)) for what, ident in found]
    finally:
        database.close()
    return keys, removals


def drop_empty_layer(base: str) -> None:
    """The one layer the snapshotter keeps for ever, so the base directory
    is left as the base_dir fixture wants it."""
    from rootfs_core import RootFS

    rfs = RootFS(base)
    for layer in rfs.layers():
        rfs.remove_layer(layer.id)


@pytest.fixture
def sockdir() -> Iterator[str]:
    path = scratch_dir("sock-")
    yield path
    remove_scratch(path)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Each backend that stacks layers, skipped where it does not work."""
    from rootfs_core import RootFS

    name = str(request.param)
    holder = scratch_dir("probe-")
    try:
        status = {s.name: s for s in RootFS(holder).backends()}.get(name)
    finally:
        remove_scratch(holder)
    if status is None or not status.supported:
        pytest.skip(f"backend {name} is not supported here: {status.reason if status else 'not installed'}")
    return name


@contextlib.contextmanager
def served(base_dir: str, sockdir: str, backend: str, **options: Any) -> Iterator[Client]:
    """A snapshotter (``options``: its keyword arguments) served on a socket
    in ``sockdir``, and a client; every snapshot removed and the server
    stopped after the block."""
    address = os.path.join(sockdir, "snapshotter.sock")
    snapshotter, server = start(base_dir, address, backend, **options)
    channel = grpc.insecure_channel("unix:" + address)
    try:
        client = Client(snapshots_pb2_grpc.SnapshotsStub(channel), snapshotter, address)
        yield client
        client.remove_all()
    finally:
        channel.close()
        stop(snapshotter, server)


@pytest.fixture
def client(base_dir: str, sockdir: str, backend: str) -> Iterator[Client]:
    with served(base_dir, sockdir, backend) as served_client:
        yield served_client
    assert [layer.id for layer in _layers(base_dir)] == [served_client.snapshotter.empty_layer]
    drop_empty_layer(base_dir)


def _layers(base: str) -> list[object]:
    from rootfs_core import RootFS

    return list(RootFS(base).layers())
