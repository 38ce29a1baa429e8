"""Several processes on one base directory at once.

Four processes each run N generate/use/remove cycles through the Python API
(each cycle opening a RootFS afresh, so each also probes and sweeps), while
a fifth runs ``gc`` and lists instances in a loop. Proven: zero failures in
any of them; ``gc`` never takes apart anything (nothing crashed, so nothing
is its business, not even an instance half-way through a generate or a
remove); every listed instance is consistent while they run; and at the
end no mount, directory, record or marker is left, and the prototype is
unchanged. Sizes: N=15 in CI, N=100 with ``ROOTFS_SLOW=1``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from integration_support import SLOW, assert_consistent, cli_env, seed_from_env

from rootfs_core import RootFS, mounttable
from rootfs_core.core import GcReport

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


def _result(proc: subprocess.Popen[bytes]) -> dict[str, object]:
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
    failures, gc cleans nothing, zero leaks, records consistent."""
    if os.geteuid() != 0:
        pytest.skip("real mounts need root")
    for name in set(backends):
        probe = RootFS(base_dir, backend=name).probe(name)
        if not probe.supported:
            pytest.skip(f"{name} is not supported here: {probe.reason}")
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
        assert result["failures"] == [], f"{name} worker failed:\n" + "\n".join(result["failures"])  # type: ignore[arg-type]
        assert result["cycles"] == CYCLES
    assert swept["failures"] == [], "gc/list failed:\n" + "\n".join(swept["failures"])  # type: ignore[arg-type]
    assert swept["acted"] == [], f"gc took apart what live processes were working on: {swept['acted']}"
    assert isinstance(swept["iterations"], int) and swept["iterations"] > 0
    # gc may *report* as orphans the directories of instances a concurrent remove
    # deleted meanwhile (a known misreport with its own strict xfail, below);
    # it must never *act* on them, checked above.
    print(
        f"{len(backends)} x {CYCLES} cycles beside {swept['iterations']} gc/list rounds; "
        f"gc reported (without acting) {swept['reported']}"
    )
    assert assert_consistent(base_dir, {}) == []


@pytest.mark.xfail(
    strict=True,
    reason="bug: RootFS.gc (rootfs_core/core.py, the loop over `names`) lists the base dir and the "
    "mount table before reading the records, so an instance that a concurrent remove finishes in "
    "between is reported in `orphans` and `unmounted` although gc found nothing to do (remove_tree "
    "raised FileNotFoundError, unmount saw no mount point); `rootfs gc` then prints that it cleaned "
    "up what it never touched",
)
def test_gc_does_not_report_what_a_concurrent_remove_took_away(
    base_dir: str, backend: str, prototype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race the concurrency test sees now and then, made deterministic: a
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
