"""Crash recovery under random SIGKILLs of the real command line.

Each trial starts ``rootfs generate`` and ``rootfs remove`` (of a finished
instance) side by side on one base directory and SIGKILLs each at a random
moment between 0 and the measured duration of that command, then runs
``rootfs gc --json``. Half the kills count from the start of the process
(most land while Python starts, as a real crash would); the other half
count from the command's first logged step, so they land inside the work
itself (the opening sweep, the probe, the mounts, the copies).

After every trial: nothing of an incomplete instance remains (no mount,
directory, record, marker or temporary file of the store: mount table and
listdir), ``rootfs list`` succeeds, every finished instance still works
(a file read through it, a file written in its tmp), records, directories,
mounts and ``rootfs list --json`` agree, and the prototype is bit-for-bit
unchanged. The seed is printed (replay with ``ROOTFS_SEED``).

Sizes: a few dozen kills per backend in CI (this file takes ~25 s); 300
trials (600 kills) per backend with ``ROOTFS_SLOW=1``.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from integration_support import (
    Outcome,
    assert_consistent,
    assert_works,
    base_state,
    cli_argv,
    run_and_kill,
    run_cli,
    seed_from_env,
    text,
    timed_run,
)

from rootfs_core import RootFS
from rootfs_core.testing.checks import mounts_below, tree_checksum

CI_TRIALS = 25
SLOW_TRIALS = 300
POOL = 2  # finished instances kept around for the removes to kill


def _killed(rng: random.Random, argv: list[str | bytes], total: float, work: float) -> Callable[[], Outcome]:
    """``argv`` to be killed at a moment drawn now: counted from its start
    (up to ``total``) or from its first logged step (up to ``work``), half
    of the time each. Drawn in the caller's thread, so a seed replays."""
    anchored = rng.random() < 0.5
    delay = rng.uniform(0, work if anchored else total)
    return functools.partial(run_and_kill, argv, anchored=anchored, delay=delay)


@pytest.mark.parametrize(
    "trials", [pytest.param(CI_TRIALS, id="ci"), pytest.param(SLOW_TRIALS, id="slow", marks=pytest.mark.slow)]
)
def test_random_sigkills_of_generate_and_remove_then_gc(
    base_dir: str, backend: str, prototype: str, trials: int
) -> None:
    """Random SIGKILLs of the CLI's generate and remove, then ``rootfs gc``:
    only whole, working instances remain, and nothing else."""
    seed = seed_from_env()
    print(f"seed {seed} (replay: ROOTFS_SEED={seed})")
    rng = random.Random(seed)
    rfs = RootFS(base_dir, backend=backend)
    checksum = tree_checksum(prototype)
    first = rfs.generate(prototype)
    per_instance = {backend: len(mounts_below(first))}
    generate = cli_argv(base_dir, "-v", "--backend", backend, "generate", prototype, "--json")
    # Calibrate: the durations a kill is drawn from.
    gen_total, gen_work = timed_run(generate)
    rem_total, rem_work = timed_run(cli_argv(base_dir, "-v", "remove", first))
    hits = strays = 0
    for trial in range(trials):
        where = f"seed {seed}, {backend} trial {trial}"
        ready = [i for i in rfs.instances() if i.state == "ready"]
        while len(ready) < POOL:
            rfs.generate(prototype)
            ready = [i for i in rfs.instances() if i.state == "ready"]
        before = {i.id for i in ready}
        target = rng.choice(sorted(before))
        removal = cli_argv(base_dir, "-v", "remove", target)
        runs = (_killed(rng, generate, gen_total, gen_work), _killed(rng, removal, rem_total, rem_work))
        with ThreadPoolExecutor(2) as pool:  # side by side
            gen, rem = (future.result() for future in [pool.submit(run) for run in runs])
        for name, outcome in (("generate", gen), ("remove", rem)):
            assert outcome.returncode in (0, -signal.SIGKILL), (
                f"{where}: {name} exited {outcome.returncode}: {text(outcome.stderr)}"
            )
        left = base_state(base_dir)
        hits += bool(left.markers or left.dirs != left.records)
        strays += bool(left.strays)
        gc = run_cli(base_dir, "gc", "--json")
        assert gc.returncode == 0, f"{where}: {text(gc.stderr)}"
        assert json.loads(gc.stdout)["dry_run"] is False
        # Nothing at all is left of an incomplete instance: no record, marker,
        # temporary file, directory or mount; `rootfs list` succeeds.
        after = set(assert_consistent(base_dir, per_instance, where))
        assert before - {target} <= after, f"{where}: a finished instance was lost"
        new = after - before
        assert len(new) <= 1, f"{where}: {new}"
        if gen.returncode == 0:
            assert new == {json.loads(gen.stdout)["id"]}, where
        if rem.returncode == 0:
            assert target not in after, where
        for instance_id in sorted(after):
            assert_works(os.path.join(base_dir, instance_id, "root"), f"trial{trial}")
        assert tree_checksum(prototype) == checksum, f"{where}: the prototype changed"
    print(
        f"{hits} of {trials} trials left an incomplete instance for gc, "
        f"{strays} a temporary file of the store"
    )
    if trials >= SLOW_TRIALS:
        assert hits > 0, "no kill landed inside an operation: the timings are off"
    for instance in rfs.instances():
        rfs.remove(instance.root)
