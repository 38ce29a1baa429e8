"""A worker process of test_concurrency.py (a script, not a test module).

``cycle BASE PROTOTYPE BACKEND N SEED``: N generate/use/remove cycles, each
with a RootFS opened afresh (so each also sweeps and probes, as a command
would). ``sweeper BASE STOP_FILE``: gc and list in a loop until STOP_FILE
exists. Each prints one JSON object: what it did, and every failure with
its traceback.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import time
import traceback

from rootfs_core import RootFS
from rootfs_core.syscalls import LinuxSyscalls

HOSTNAME = b"prototype\n"


class ActingSyscalls(LinuxSyscalls):
    """The real calls, remembering when each one that changed something was
    made (``[monotonic seconds, call, path]``; a call on a path that is
    already gone changes nothing and is not remembered). Where nothing
    crashed, gc and the sweep on opening must remember none."""

    def __init__(self) -> None:
        self.acted: list[tuple[float, str, str]] = []

    def umount(self, target: str, flags: int) -> None:
        super().umount(target, flags)
        self.acted.append((time.monotonic(), "umount", target))

    def rmdir(self, path: str) -> None:
        super().rmdir(path)
        self.acted.append((time.monotonic(), "rmdir", path))

    def remove_tree(self, path: str) -> None:
        super().remove_tree(path)
        self.acted.append((time.monotonic(), "remove_tree", path))


def cycle(base: str, prototype: str, backend: str, cycles: int, seed: int) -> dict[str, object]:
    """N cycles: open, generate, check, write, interleave, check, remove."""
    rng = random.Random(seed)
    failures = []
    swept: list[tuple[float, str, str]] = []  # what the sweeps on opening did
    done = 0
    for n in range(cycles):
        try:
            syscalls = ActingSyscalls()
            rfs = RootFS(base, backend=backend, syscalls=syscalls)
            swept += syscalls.acted  # nothing crashed: must be nothing (see the test)
            root = rfs.generate(prototype)
            instance = rfs.instance(root)
            assert instance is not None and instance.state == "ready", instance
            assert instance.backend == backend and instance.prototype == prototype, instance
            with open(os.path.join(root, "etc/hostname"), "rb") as fh:
                assert fh.read() == HOSTNAME
            mine = f"{os.getpid()}-{n}".encode()
            with open(os.path.join(root, "tmp/mine"), "wb") as fh:
                fh.write(mine)
            time.sleep(rng.uniform(0, 0.02))  # let the others interleave
            with open(os.path.join(root, "tmp/mine"), "rb") as fh:
                assert fh.read() == mine, "another instance's write showed through"
            rfs.remove(root)
            assert not os.path.lexists(os.path.dirname(root)), f"{root} left after remove"
            assert rfs.instance(root) is None
            done += 1
        except Exception:
            failures.append(traceback.format_exc())
    return {"cycles": done, "failures": failures, "acted": swept}


def sweeper(base: str, stop_file: str) -> dict[str, object]:
    """gc, list (now and then through the command line) until told to stop."""
    failures = []
    acted: list[tuple[float, str, str]] = []  # what gc (or the sweep on opening) really did
    reported = []  # what gc said it cleaned up
    iterations = 0
    while not os.path.exists(stop_file):
        try:
            syscalls = ActingSyscalls()
            rfs = RootFS(base, syscalls=syscalls)  # opening sweeps, too
            report = rfs.gc()
            acted += syscalls.acted
            if report.instances or report.unmounted or report.orphans:
                reported.append(dataclasses.asdict(report))
            for instance in rfs.instances():
                assert instance.state in ("ready", "incomplete", "removing"), instance
                assert instance.root == os.path.join(base, instance.id, "root"), instance
            if iterations % 10 == 0:  # now and then the command line, too
                listed = subprocess.run(
                    [sys.executable, "-m", "rootfs_core.cli", "--base-dir", base, "list", "--json"],
                    capture_output=True,
                    check=False,
                    cwd="/",
                )
                assert listed.returncode == 0, listed.stderr
                json.loads(listed.stdout)
            iterations += 1
        except Exception:
            failures.append(traceback.format_exc())
    return {"iterations": iterations, "failures": failures, "acted": acted, "reported": reported}


def main(argv: list[str]) -> int:
    if argv[0] == "cycle":
        result = cycle(argv[1], argv[2], argv[3], int(argv[4]), int(argv[5]))
    else:
        result = sweeper(argv[1], argv[2])
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
