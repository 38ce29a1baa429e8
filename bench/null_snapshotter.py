"""A proxy snapshotter that does no work: the floor under any Python one.

    python bench/null_snapshotter.py --address SOCKET --dir DIR

bench/containerd.py runs it beside rootfs-snapshotter, as a third proxy
plugin of the same containerd, to tell what containerd's proxy design costs
a snapshotter served by grpcio from what rootfs itself costs. It is served
the way rootfs-snapshotter is (grpc's threaded server, 16 workers, the same
generated stubs) and keeps its snapshots' keys, parents and kinds in a dict,
so that containerd's collector finds and removes them through it as it does
rootfs's (a List, a Remove each, a Cleanup). It mounts, copies and stores
nothing: every Prepare and View is answered with a bind of ``DIR`` (a
writable one for Prepare), so a cycle through it costs containerd's calls to
the proxy and the client's bind mount, and nothing of a snapshotter's own.
Not a snapshotter to use: every snapshot shares ``DIR``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import empty_pb2, timestamp_pb2
from rootfs_containerd.api import mount_pb2, snapshots_pb2, snapshots_pb2_grpc


@dataclass
class Snapshot:
    kind: int
    parent: str
    labels: dict[str, str] = field(default_factory=dict)


class NullSnapshots(snapshots_pb2_grpc.SnapshotsServicer):  # type: ignore[misc]
    """containerd's snapshots service with the bookkeeping a client sees and nothing behind it."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.snapshots: dict[str, Snapshot] = {}
        self.lock = threading.Lock()
        self.created = timestamp_pb2.Timestamp()
        self.created.FromNanoseconds(time.time_ns())

    def _mounts(self, read_only: bool) -> list[mount_pb2.Mount]:
        return [
            mount_pb2.Mount(
                type="bind", source=self.directory, options=["rbind", "ro" if read_only else "rw"]
            )
        ]

    def _add(self, request: Any, context: grpc.ServicerContext, kind: int) -> None:
        with self.lock:
            if request.key in self.snapshots:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"snapshot {request.key} already exists")
            self.snapshots[request.key] = Snapshot(kind, request.parent, dict(request.labels))

    def _get(self, key: str, context: grpc.ServicerContext) -> Snapshot:
        found = self.snapshots.get(key)
        if found is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"snapshot {key} does not exist")
        assert found is not None  # abort raised
        return found

    def _info(self, key: str, snapshot: Snapshot) -> snapshots_pb2.Info:
        return snapshots_pb2.Info(
            name=key,
            parent=snapshot.parent,
            kind=snapshot.kind,
            created_at=self.created,
            updated_at=self.created,
            labels=snapshot.labels,
        )

    def Prepare(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.PrepareSnapshotResponse:
        self._add(request, context, snapshots_pb2.ACTIVE)
        return snapshots_pb2.PrepareSnapshotResponse(mounts=self._mounts(False))

    def View(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.ViewSnapshotResponse:
        self._add(request, context, snapshots_pb2.VIEW)
        return snapshots_pb2.ViewSnapshotResponse(mounts=self._mounts(True))

    def Mounts(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.MountsResponse:
        snapshot = self._get(request.key, context)
        return snapshots_pb2.MountsResponse(mounts=self._mounts(snapshot.kind == snapshots_pb2.VIEW))

    def Commit(self, request: Any, context: grpc.ServicerContext) -> empty_pb2.Empty:
        with self.lock:
            active = self._get(request.key, context)
            if request.name in self.snapshots:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"snapshot {request.name} already exists")
            del self.snapshots[request.key]
            labels = dict(request.labels) or active.labels
            self.snapshots[request.name] = Snapshot(snapshots_pb2.COMMITTED, active.parent, labels)
        return empty_pb2.Empty()

    def Remove(self, request: Any, context: grpc.ServicerContext) -> empty_pb2.Empty:
        with self.lock:
            self._get(request.key, context)
            if any(s.parent == request.key for s in self.snapshots.values()):
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"snapshot {request.key} has children")
            del self.snapshots[request.key]
        return empty_pb2.Empty()

    def Stat(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.StatSnapshotResponse:
        return snapshots_pb2.StatSnapshotResponse(
            info=self._info(request.key, self._get(request.key, context))
        )

    def Update(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.UpdateSnapshotResponse:
        with self.lock:
            snapshot = self._get(request.info.name, context)
            snapshot.labels = dict(request.info.labels)
        return snapshots_pb2.UpdateSnapshotResponse(info=self._info(request.info.name, snapshot))

    def List(
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[snapshots_pb2.ListSnapshotsResponse]:
        with self.lock:
            infos = [self._info(key, snapshot) for key, snapshot in self.snapshots.items()]
        yield snapshots_pb2.ListSnapshotsResponse(info=infos)

    def Usage(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.UsageResponse:
        self._get(request.key, context)
        return snapshots_pb2.UsageResponse(size=0, inodes=0)

    def Cleanup(self, request: Any, context: grpc.ServicerContext) -> empty_pb2.Empty:
        return empty_pb2.Empty()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--address", required=True, help="the unix socket to listen on")
    parser.add_argument("--dir", required=True, help="the directory every Prepare and View binds")
    args = parser.parse_args()
    if not os.path.isdir(args.dir):
        parser.error(f"--dir {args.dir}: not a directory")
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=16))
    snapshots_pb2_grpc.add_SnapshotsServicer_to_server(NullSnapshots(os.path.abspath(args.dir)), server)
    server.add_insecure_port("unix:" + os.path.abspath(args.address))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    server.start()
    while not stop.wait(0.5):  # the handler runs in this thread, whichever one got the signal
        pass
    server.stop(grace=5).wait()
    os.unlink(args.address)
    return 0


if __name__ == "__main__":
    sys.exit(main())
