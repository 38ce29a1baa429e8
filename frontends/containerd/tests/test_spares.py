"""Roots made ahead (``rootfs_containerd.spares``): a Prepare over a stack
prepared before takes a root already mounted; spares are no snapshots, go
with their layers, when idle, and with the snapshotter, and a kill leaves
none behind once it has started again; one being made is waited for, briefly."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import pytest
from conftest import Client, drop_empty_layer, recorded, served
from rootfs_core import RootFS
from rootfs_core.layerstore import LayerStore
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts, tree_checksum

from rootfs_containerd.api import snapshots_pb2 as pb
from rootfs_containerd.api import snapshots_pb2_grpc
from rootfs_containerd.spares import MAKING_WAIT, Spares, Stack


def spare_roots(client: Client) -> set[str]:
    """Roots of made instances in the base directory that no snapshot names."""
    named = {row.instance for row in client.snapshotter.db.rows() if row.instance}
    rfs = RootFS(client.snapshotter.base_dir, sweep=False)
    return {inst.root for inst in rfs.instances() if inst.id not in named and inst.state == "ready"}


def wait_until(what: Callable[[], bool], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.01)


def _serve(base_dir: str, sockdir: str, backend: str, **options: float) -> Iterator[Client]:
    with served(base_dir, sockdir, backend, **options) as client:
        yield client
    assert RootFS(base_dir).instances() == []
    assert instance_mounts(base_dir) == []
    assert recorded(base_dir)[1] == []  # a spare held up no layer's removal
    drop_empty_layer(base_dir)


@pytest.fixture
def spared(base_dir: str, sockdir: str, backend: str) -> Iterator[Client]:
    yield from _serve(base_dir, sockdir, backend, spares=2, spare_idle=60.0)


@pytest.fixture
def short_lived(base_dir: str, sockdir: str, backend: str) -> Iterator[Client]:
    yield from _serve(base_dir, sockdir, backend, spares=2, spare_idle=0.3)


def image(client: Client) -> tuple[str, str]:
    """A committed snapshot holding one file, and its stored layer's path."""
    root = client.prepare("unpack")
    with open(os.path.join(root, "from-the-image"), "w", encoding="utf-8") as fh:
        fh.write("layer\n")
    client.commit("image", "unpack")
    row = client.snapshotter.db.get("image")
    assert row is not None and row.layer is not None
    return "image", LayerStore(client.snapshotter.base_dir).path(row.layer)


def test_the_third_prepare_over_a_stack_takes_a_root_made_ahead(spared: Client) -> None:
    parent, layer = image(spared)
    before = tree_checksum(layer)
    first = spared.prepare("c1", parent)
    assert spare_roots(spared) == set()  # a stack used once keeps none
    spared.prepare("c2", parent)
    wait_until(lambda: len(spare_roots(spared)) == 1)
    (ahead,) = spare_roots(spared)
    assert os.path.ismount(ahead)
    third = spared.prepare("c3", parent)
    assert third == ahead and third != first
    with open(os.path.join(third, "from-the-image"), encoding="utf-8") as fh:
        assert fh.read() == "layer\n"
    with open(os.path.join(third, "written"), "w", encoding="utf-8") as fh:
        fh.write("mine\n")
    assert not os.path.exists(os.path.join(first, "written"))  # a root of its own
    wait_until(lambda: len(spare_roots(spared)) == 1)  # made again behind it
    assert spare_roots(spared) != {third}
    assert tree_checksum(layer) == before


def test_a_spare_is_no_snapshot_and_cleanup_keeps_it(spared: Client) -> None:
    spared.prepare("a")
    spared.prepare("b")
    wait_until(lambda: len(spare_roots(spared)) == 1)
    (ahead,) = spare_roots(spared)
    assert sorted(info.name for info in spared.list()) == ["a", "b"]
    spared.stub.Cleanup(pb.CleanupRequest())  # reconciles: reconcile_every is 0
    assert spare_roots(spared) == {ahead} and os.path.ismount(ahead)


def test_removing_an_image_removes_the_spares_over_it_and_its_layer(spared: Client) -> None:
    parent, layer = image(spared)
    spared.prepare("c1", parent)
    spared.prepare("c2", parent)
    wait_until(lambda: len(spare_roots(spared)) == 1)
    (ahead,) = spare_roots(spared)
    for key in ("c1", "c2", parent):
        spared.remove(key)
    spared.snapshotter.settle()
    assert spare_roots(spared) == set()
    assert not os.path.exists(ahead)
    assert [found.id for found in RootFS(spared.snapshotter.base_dir).layers()] == [
        spared.snapshotter.empty_layer
    ]
    assert not os.path.exists(layer)


def test_a_stack_left_idle_loses_its_spare(short_lived: Client) -> None:
    short_lived.prepare("a")
    short_lived.prepare("b")
    wait_until(lambda: len(spare_roots(short_lived)) == 1)
    (ahead,) = spare_roots(short_lived)
    wait_until(lambda: not os.path.exists(ahead), seconds=5)
    assert spare_roots(short_lived) == set()
    assert len(instance_mounts(short_lived.snapshotter.base_dir)) == 2  # the two snapshots' roots


def test_a_spare_unmounted_behind_its_back_is_not_handed_out(spared: Client) -> None:
    spared.prepare("a")
    spared.prepare("b")
    wait_until(lambda: len(spare_roots(spared)) == 1)
    (ahead,) = spare_roots(spared)
    LinuxSyscalls().umount(ahead, UMOUNT_NOFOLLOW)
    root = spared.prepare("c")
    assert root != ahead and os.path.ismount(root)
    assert not os.path.exists(ahead)  # removed, not left over


def test_a_killed_snapshotter_leaves_no_spare_once_started_again(
    base_dir: str, sockdir: str, backend: str
) -> None:
    address = os.path.join(sockdir, "kill.sock")
    command = [sys.executable, "-m", "rootfs_containerd", "--address", address, "--base-dir", base_dir]
    command += ["--backend", backend, "--spares", "2"]

    def launch() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(command, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: os.path.exists(address) or proc.poll() is not None, seconds=30)
            assert proc.poll() is None, "the snapshotter did not start"
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        return proc

    proc = launch()
    try:
        with grpc.insecure_channel("unix:" + address) as channel:
            client = Client(snapshots_pb2_grpc.SnapshotsStub(channel), None, address)  # type: ignore[arg-type]
            kept = client.prepare("kept")
            client.prepare("second")
            rfs = RootFS(base_dir, sweep=False)
            wait_until(lambda: [i.state for i in rfs.instances()] == ["ready"] * 3)  # two, and a spare
        proc.kill()
        proc.wait()
        os.unlink(address)
        proc = launch()
        assert sorted(os.path.dirname(p) for p in instance_mounts(base_dir)) == sorted(
            os.path.dirname(inst.root) for inst in rfs.instances()
        )
        assert len(rfs.instances()) == 2 and kept in {inst.root for inst in rfs.instances()}
        with grpc.insecure_channel("unix:" + address) as channel:
            client = Client(snapshots_pb2_grpc.SnapshotsStub(channel), None, address)  # type: ignore[arg-type]
            client.remove_all()
    finally:
        proc.terminate()
        try:
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    rfs = RootFS(base_dir)
    assert rfs.instances() == [] and instance_mounts(base_dir) == []
    drop_empty_layer(base_dir)


class SlowMaker:
    """A maker of spares that starts at once and finishes when released
    (a generate held up: fault injection, no mounts)."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        self.made: list[str] = []

    def make(self, stack: Stack) -> str:
        self.started.set()
        assert self.release.wait(10)
        self.made.append(f"/nowhere/{stack[-1]}-{len(self.made)}")
        return self.made[-1]


@contextlib.contextmanager
def slow_spares() -> Iterator[tuple[Spares, SlowMaker]]:
    maker = SlowMaker()
    spares = Spares(maker.make, lambda root: None, contextlib.nullcontext, stacks=1, idle=60)
    try:
        yield spares, maker
    finally:
        maker.release.set()
        spares.close()


def test_a_prepare_waits_for_the_spare_being_made_over_its_stack() -> None:
    """Made in part already, it is ready sooner than a root made anew."""
    with slow_spares() as (spares, maker):
        assert spares.take(("L",)) is None and spares.take(("L",)) is None  # used twice: kept
        spares.refill()
        assert maker.started.wait(10)
        threading.Timer(MAKING_WAIT / 5, maker.release.set).start()
        assert spares.take(("L",)) == "/nowhere/L-0"


def test_a_spare_made_too_slowly_is_not_waited_for() -> None:
    with slow_spares() as (spares, maker):
        assert spares.take(("L",)) is None and spares.take(("L",)) is None
        spares.refill()
        assert maker.started.wait(10)
        start = time.monotonic()
        assert spares.take(("L",)) is None
        assert MAKING_WAIT <= time.monotonic() - start < MAKING_WAIT + 1
        assert maker.made == []
