"""The helper processes that make roots ahead and delete removed snapshots
(``rootfs_containerd.helper``): their priority, their errors, and that they
never outlive the snapshotter."""

from __future__ import annotations

import os
import signal
import time

import grpc
import pytest
from conftest import Client, drop_empty_layer, start_process, stop_process
from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.testing.checks import ProcessState, command_lines, is_gone, process_state

from rootfs_containerd.api import snapshots_pb2_grpc
from rootfs_containerd.helper import Helper, HelperError
from rootfs_containerd.service import Snapshotter


def _helpers(base: str) -> dict[int, ProcessState]:
    """The live helper processes working on ``base``, by pid."""
    found = {}
    for pid, argv in command_lines().items():
        # The interpreter itself, not setpriv or nice about to exec it.
        if argv[1:3] != [b"-m", b"rootfs_containerd.helper"] or os.fsencode(base) not in argv:
            continue
        state = process_state(pid)
        if state is not None and state.state != "Z":
            found[pid] = state
    return found


def _started(base: str, count: int, seconds: float = 10) -> dict[int, ProcessState]:
    """The helpers of ``base`` once there are ``count`` running Python (each
    is exec'ed by setpriv, then by nice, before)."""
    deadline = time.monotonic() + seconds
    while len(found := _helpers(base)) != count:
        assert time.monotonic() < deadline, f"helpers of {base}: {found}"
        time.sleep(0.02)
    return found


def _gone(pids: set[int], seconds: float = 10) -> bool:
    return all(is_gone(pid, seconds) for pid in pids)


def test_helpers_are_niced_and_die_with_a_killed_snapshotter(
    base_dir: str, sockdir: str, backend: str
) -> None:
    """Two helpers, children of the snapshotter at the niceness asked for;
    SIGKILL the snapshotter after they did some work and they are gone too
    (started again, it cleans up what the kill left)."""
    address = os.path.join(sockdir, "helpers.sock")
    proc = start_process(base_dir, address, backend, "--helper-nice", "7")
    try:
        helpers = _started(base_dir, 2)
        assert {state.parent for state in helpers.values()} == {proc.pid}
        assert {state.nice for state in helpers.values()} == {7}
        with grpc.insecure_channel("unix:" + address) as channel:
            client = Client(snapshots_pb2_grpc.SnapshotsStub(channel), None, address)  # type: ignore[arg-type]
            root = client.prepare("a")
            with open(os.path.join(root, "f"), "w") as fh:
                fh.write("x")
            client.commit("A", "a")
            for n in range(3):  # the third over A takes a root made ahead by a helper
                client.prepare(f"k{n}", "A")
            client.remove("k0")
        proc.kill()
        proc.wait()
        assert _gone(set(helpers)), f"helpers left running: {_helpers(base_dir)}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    os.unlink(address)
    proc = start_process(base_dir, address, backend)
    try:
        with grpc.insecure_channel("unix:" + address) as channel:
            Client(snapshots_pb2_grpc.SnapshotsStub(channel), None, address).remove_all()  # type: ignore[arg-type]
    finally:
        stop_process(proc)
    assert _helpers(base_dir) == {}
    assert RootFS(base_dir, sweep=False).instances() == []
    drop_empty_layer(base_dir)


def test_a_helper_killed_between_calls_is_started_again(base_dir: str, backend: str) -> None:
    """Kill the helper of an idle snapshotter (one: it keeps no spares): the
    next removal is done by a new one, and closing the snapshotter ends it."""
    snapshotter = Snapshotter(base_dir, backend)
    try:
        first = _started(base_dir, 1)
        for pid in first:
            os.kill(pid, signal.SIGKILL)
        assert _gone(set(first))
        (mount,) = snapshotter.prepare("a", "", {})
        with open(os.path.join(mount[1], "f"), "w") as fh:
            fh.write("x")
        snapshotter.remove("a")
        snapshotter.settle()
        assert RootFS(base_dir, sweep=False).instances() == []
        again = _started(base_dir, 1)
        assert not set(again) & set(first)
    finally:
        snapshotter.close()
    assert _helpers(base_dir) == {}
    drop_empty_layer(base_dir)


def test_a_helper_keeps_the_cores_error_and_refuses_calls_once_closed(base_dir: str, backend: str) -> None:
    helper = Helper(base_dir, backend, nice=0)
    try:
        with pytest.raises(RootFSError) as caught:
            helper.remove_layer("f" * 64)
        assert caught.value.error_id is ErrorId.ErrNoSuchLayer
        with pytest.raises(RootFSError) as caught:
            helper.remove(os.path.join(base_dir, "..", "elsewhere"))
        assert caught.value.error_id is ErrorId.ErrNotOurRoot
    finally:
        helper.close()
    assert _helpers(base_dir) == {}
    with pytest.raises(HelperError, match="closed"):
        helper.remove_layer("f" * 64)


def test_with_vv_a_helper_logs_the_cores_steps(base_dir: str, sockdir: str, backend: str) -> None:
    """``-vv`` shows the core's steps, the deletions a helper does included."""
    address = os.path.join(sockdir, "vv.sock")
    log = os.path.join(sockdir, "stderr")
    with open(log, "wb") as err:
        proc = start_process(base_dir, address, backend, "-vv", stderr=err)
        try:
            with grpc.insecure_channel("unix:" + address) as channel:
                client = Client(snapshots_pb2_grpc.SnapshotsStub(channel), None, address)  # type: ignore[arg-type]
                root = client.prepare("a")
                client.remove("a")
        finally:
            stop_process(proc)
    with open(log, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    os.unlink(log)
    assert proc.returncode == 0
    assert any(" helper rootfs: " in line and root in line for line in lines), lines[-20:]
    assert not os.path.exists(root)
    drop_empty_layer(base_dir)


def test_a_snapshotter_that_fails_to_start_leaves_no_helper(
    base_dir: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The start-up reconciliation fails (injected): the constructor raises
    and its helpers are gone with it."""

    def fail(self: Snapshotter, *, starting: bool) -> dict[str, list[str]]:
        raise OSError(5, "injected: the reconciliation failed")

    monkeypatch.setattr(Snapshotter, "reconcile", fail)
    with pytest.raises(OSError, match="injected"):
        Snapshotter(base_dir, backend, spares=2)
    assert _helpers(base_dir) == {}
    monkeypatch.undo()
    drop_empty_layer(base_dir)
