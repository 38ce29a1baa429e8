"""The gRPC face of ``service.Snapshotter``:
``containerd.services.snapshots.v1.Snapshots``."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import grpc
from google.protobuf import empty_pb2, timestamp_pb2

from rootfs_containerd.api import mount_pb2, snapshots_pb2, snapshots_pb2_grpc
from rootfs_containerd.metadata import ACTIVE, COMMITTED, VIEW, Row
from rootfs_containerd.service import SnapshotError, Snapshotter

log = logging.getLogger("rootfs_containerd.grpc")

_KINDS = {ACTIVE: snapshots_pb2.ACTIVE, VIEW: snapshots_pb2.VIEW, COMMITTED: snapshots_pb2.COMMITTED}
LIST_BATCH = 100  # infos per ListSnapshotsResponse

F = TypeVar("F", bound=Callable[..., Any])


def _timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def info(row: Row) -> snapshots_pb2.Info:
    return snapshots_pb2.Info(
        name=row.key,
        parent=row.parent or "",
        kind=_KINDS[row.kind],
        created_at=_timestamp(row.created),
        updated_at=_timestamp(row.updated),
        labels=row.labels,
    )


def _mounts(found: list[tuple[str, str, list[str]]]) -> list[mount_pb2.Mount]:
    return [mount_pb2.Mount(type=kind, source=source, options=options) for kind, source, options in found]


def _rpc(method: F) -> F:
    """Map SnapshotError to its status; log the call and its time (at
    DEBUG: ``rootfs-snapshotter -v``); an unexpected error is INTERNAL."""
    name = method.__name__

    @functools.wraps(method)
    def wrapper(self: Servicer, request: Any, context: grpc.ServicerContext) -> Any:
        start = time.monotonic()
        what = getattr(request, "key", "") or getattr(request, "name", "")
        try:
            result = method(self, request, context)
            if name == "List":
                result = list(result)
        except SnapshotError as exc:
            log.debug("%s %s: %s (%.1f ms)", name, what, exc.code.name, (time.monotonic() - start) * 1e3)
            context.abort(getattr(grpc.StatusCode, exc.code.value), exc.message)
        except Exception as exc:
            log.exception("%s %s failed", name, what)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(exc).__name__}: {exc}")
        log.debug("%s %s: OK (%.1f ms)", name, what, (time.monotonic() - start) * 1e3)
        return iter(result) if name == "List" else result

    return wrapper  # type: ignore[return-value]


class Servicer(snapshots_pb2_grpc.SnapshotsServicer):  # type: ignore[misc]
    def __init__(self, snapshotter: Snapshotter) -> None:
        self.snapshotter = snapshotter
        # Each row's Info as the last full List made it: containerd's
        # collector lists every snapshot at each collection, while it holds
        # up Prepares, and making an Info costs 6 us where reusing one costs
        # 1. A row is replaced, never changed, when its snapshot changes
        # (metadata.Row is frozen), so the same row object means the same Info.
        self._infos: dict[str, tuple[Row, snapshots_pb2.Info]] = {}

    @_rpc
    def Prepare(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.PrepareSnapshotResponse:
        found = self.snapshotter.prepare(request.key, request.parent, dict(request.labels))
        return snapshots_pb2.PrepareSnapshotResponse(mounts=_mounts(found))

    @_rpc
    def View(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.ViewSnapshotResponse:
        found = self.snapshotter.view(request.key, request.parent, dict(request.labels))
        return snapshots_pb2.ViewSnapshotResponse(mounts=_mounts(found))

    @_rpc
    def Mounts(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.MountsResponse:
        return snapshots_pb2.MountsResponse(mounts=_mounts(self.snapshotter.mounts(request.key)))

    @_rpc
    def Commit(self, request: Any, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.snapshotter.commit(request.name, request.key, dict(request.labels))
        return empty_pb2.Empty()

    @_rpc
    def Remove(self, request: Any, context: grpc.ServicerContext) -> empty_pb2.Empty:
        self.snapshotter.remove(request.key)
        return empty_pb2.Empty()

    @_rpc
    def Stat(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.StatSnapshotResponse:
        return snapshots_pb2.StatSnapshotResponse(info=info(self.snapshotter.stat(request.key)))

    @_rpc
    def Update(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.UpdateSnapshotResponse:
        paths = list(request.update_mask.paths) if request.HasField("update_mask") else []
        row = self.snapshotter.update(request.info.name, dict(request.info.labels), paths)
        return snapshots_pb2.UpdateSnapshotResponse(info=info(row))

    @_rpc
    def List(
        self, request: Any, context: grpc.ServicerContext
    ) -> Iterator[snapshots_pb2.ListSnapshotsResponse]:
        rows = self.snapshotter.walk(list(request.filters))
        known = self._infos
        made: dict[str, tuple[Row, snapshots_pb2.Info]] = {}
        for row in rows:
            cached = known.get(row.key)
            made[row.key] = cached if cached is not None and cached[0] is row else (row, info(row))
        if not any(request.filters):
            self._infos = made  # all of them: the removed ones are forgotten
        infos = [made[row.key][1] for row in rows]
        for start in range(0, len(infos), LIST_BATCH):
            yield snapshots_pb2.ListSnapshotsResponse(info=infos[start : start + LIST_BATCH])

    @_rpc
    def Usage(self, request: Any, context: grpc.ServicerContext) -> snapshots_pb2.UsageResponse:
        size, inodes = self.snapshotter.usage(request.key)
        return snapshots_pb2.UsageResponse(size=size, inodes=inodes)

    @_rpc
    def Cleanup(self, request: Any, context: grpc.ServicerContext) -> empty_pb2.Empty:
        report = self.snapshotter.cleanup()
        if report is not None:
            log.info("cleanup: %s", {name: found for name, found in report.items() if found})
        return empty_pb2.Empty()
