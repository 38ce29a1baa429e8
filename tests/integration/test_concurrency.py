"""Several processes on one base directory at once.

Four processes each run N generate/use/remove cycles through the Python API
(each cycle opening a RootFS afresh, so each also probes and sweeps), while
a fifth runs ``gc`` and lists instances in a loop. Proven: zero failures in
any of them (every list succeeds); ``gc`` (and the sweep on opening) never
unmounts or deletes anything at all, and ``gc`` reports nothing, since no
process crashed (their syscalls record every change that took effect);
every listed instance is consistent while they run; and at the end no
mount, directory, record, marker or temporary file is left, and the
prototype is unchanged. Sizes: N=15 in CI, N=100 with ``ROOTFS_SLOW=1``.

The races this test once met now and then (gc taking a remove that had just
begun for a crashed one; a list meeting a record not written yet; gc
reporting what a concurrent remove took away) each have a deterministic test
below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from integration_support import (
    SLOW,
    act_once_visible,
    assert_consistent,
    cli_env,
    in_child_paused,
    require_backends,
    run_cli,
    seed_from_env,
    text,
)

from rootfs_core import RootFS, mounttable
from rootfs_core.core import GcReport
from rootfs_core.store import Store

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_concurrency.py")
CYCLES = 100 if SLOW else 15
PROCESSES = 4


def _start(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, WORKER, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd="/",
        env=cli_env(),
    )


def _result(proc: subprocess.Popen[bytes]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err.decode(errors="replace")
    result = json.loads(out)
    assert isinstance(result, dict)
    return result


@pytest.mark.parametrize(
    "backends",
    [["overlayfs"] * 4, ["quilt"] * 4, ["overlayfs", "quilt", "overlayfs", "quilt"]],
    ids=["overlayfs", "quilt", "mixed"],
)
def test_concurrent_cycles_with_gc_beside_them(base_dir: str, prototype: str, backends: list[str]) -> None:
    """4 x N interleaved generate/remove cycles and a gc/list loop: zero
    failures, gc touches and reports nothing, zero leaks, records
    consistent."""
    require_backends(base_dir, *set(backends))
    seed = seed_from_env()
    print(f"seed {seed} (replay the sleeps: ROOTFS_SEED={seed})")
    stop = os.path.join(os.path.dirname(base_dir), os.path.basename(base_dir) + ".stop")
    sweeper = _start("sweeper", base_dir, stop)
    try:
        workers = [
            _start("cycle", base_dir, prototype, name, str(CYCLES), str(seed + n))
            for n, name in enumerate(backends)
        ]
        results = [_result(worker) for worker in workers]
    finally:
        open(stop, "w").close()
        swept = _result(sweeper)
        os.unlink(stop)
    for name, result in zip(backends, results, strict=True):
        assert result["failures"] == [], f"{name} worker failed:\n" + "\n".join(map(str, result["failures"]))
        assert result["cycles"] == CYCLES
    assert swept["failures"] == [], "gc/list failed:\n" + "\n".join(map(str, swept["failures"]))
    assert swept["iterations"] > 0
    acted = swept["acted"] + [act for result in results for act in result["acted"]]
    assert acted == [], f"gc or a sweep on opening changed something, yet nothing crashed: {acted}"
    assert swept["reported"] == [], f"gc reported clean-ups, yet nothing crashed: {swept['reported']}"
    print(f"{len(backends)} x {CYCLES} cycles beside {swept['iterations']} gc/list rounds")
    assert assert_consistent(base_dir, {}) == []


def test_gc_does_not_report_what_a_concurrent_remove_took_away(
    base_dir: str, backend: str, prototype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A race the concurrency test once met now and then, made deterministic: a
    remove completes between gc's listing of the base directory and its
    reading of the records. gc must neither act nor report anything."""
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(prototype)
    real = mounttable.mounts_below

    def listed_then_removed(path: str) -> list[str]:
        mounts = real(path)
        monkeypatch.setattr(mounttable, "mounts_below", real)
        rfs.remove(root)  # as another process would, right now
        return mounts

    monkeypatch.setattr(mounttable, "mounts_below", listed_then_removed)
    report = RootFS(base_dir).gc()
    assert not os.path.lexists(os.path.dirname(root))
    assert report == GcReport([], [], [])


def test_gc_leaves_alone_an_instance_a_live_remove_is_claiming(
    base_dir: str, backend: str, prototype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A remove paused the moment its marker appears (the window the
    concurrency test once hit now and then): gc takes no instance apart, since
    the owner is alive, and the remove then succeeds."""
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(prototype)
    marker = os.path.join(Store(base_dir).incomplete_dir, os.path.basename(os.path.dirname(root)))

    def remove(pause: Callable[[], None]) -> None:
        act_once_visible(monkeypatch, lambda path: path == marker, pause)
        rfs.remove(root)

    pid, paused = in_child_paused(remove)
    report = rfs.gc() if paused else None
    status = os.waitpid(pid, 0)[1]
    if not paused:
        pytest.fail(f"the remove never made its marker appear (status {status}): update this test")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert not os.path.lexists(root)
    assert report is not None and report.instances == [], f"gc took apart a live process's instance: {report}"


def test_list_beside_a_generate_whose_record_just_appeared(
    base_dir: str, backend: str, prototype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A generate paused the moment its record file appears: ``rootfs list``
    beside it succeeds (and the generate, too)."""
    rfs = RootFS(base_dir, backend=backend)
    rfs.selected_backend()
    records = Store(base_dir).records_dir

    def generate(pause: Callable[[], None]) -> None:
        act_once_visible(
            monkeypatch, lambda path: os.path.dirname(path) == records and path.endswith(".json"), pause
        )
        rfs.generate(prototype)

    pid, paused = in_child_paused(generate)
    listed = run_cli(base_dir, "list", "--json") if paused else None
    status = os.waitpid(pid, 0)[1]
    for instance in rfs.instances():
        rfs.remove(instance.root)
    if not paused:
        pytest.fail(f"the generate never made its record appear (status {status}): update this test")
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert listed is not None and listed.returncode == 0, text(listed.stderr if listed else b"")
