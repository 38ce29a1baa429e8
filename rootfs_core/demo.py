"""``rootfs demo``: the whole job once, on the sample prototype, with timings.

It is what README's first command runs on a fresh machine: build the sample
prototype, generate a root, write into it (and, as root, run a shell inside
it), show the prototype did not change, remove the root, show nothing is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeVar

from rootfs_core.checksum import tree_checksum
from rootfs_core.core import RootFS
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.mounttable import mounts_below
from rootfs_core.sample import ensure_sample

T = TypeVar("T")


def run_demo(rfs: RootFS, *, quiet: bool = False) -> dict[str, Any]:
    """Run the demo; return a report (raises ``RootFSError`` if a check fails)."""
    timings: dict[str, float] = {}

    def step(title: str, action: Callable[[], T]) -> T:
        started = time.monotonic()
        result = action()
        timings[title] = round(time.monotonic() - started, 6)
        if not quiet:
            print(f"{title:<44} {timings[title] * 1000:8.1f} ms")
        return result

    prototype = step("sample prototype ready", ensure_sample)
    before = tree_checksum(prototype)
    root = step("generate", lambda: rfs.generate(prototype))
    instance = rfs.instance(root)
    if instance is None:
        raise RootFSError(ErrorId.ErrNoSuchRoot, f"{root} was removed by someone else during the demo")
    if not quiet:
        print(f"  root {root} (backend {instance.backend})")
    step("write /tmp/hello.txt inside the root", lambda: _write(root, "tmp/hello.txt", "hello from rootfs\n"))
    ran = step("run /bin/sh inside the root (chroot)", lambda: _run_inside(root))
    if not quiet and ran:
        print("".join(f"  | {line}\n" for line in ran.splitlines()), end="")
    step("remove", lambda: rfs.remove(root))
    left = mounts_below(os.path.dirname(root)) + ([root] if os.path.lexists(root) else [])
    unchanged = tree_checksum(prototype) == before
    if left or not unchanged:
        raise RootFSError(ErrorId.ErrBackendFailed, f"demo check failed: left={left} unchanged={unchanged}")
    if not quiet:
        print(f"prototype unchanged (checksum {before[:12]}), nothing left behind")
    return {
        "prototype": prototype,
        "root": root,
        "id": instance.id,
        "backend": instance.backend,
        "shell_output": ran,
        "prototype_unchanged": unchanged,
        "left_behind": left,
        "seconds": timings,
    }


def _write(root: str, relative: str, text: str) -> None:
    with open(os.path.join(root, relative), "w", encoding="utf-8") as fh:
        fh.write(text)


def _run_inside(root: str) -> str | None:
    """Run the root's own shell in it, if we may chroot and it has one."""
    chroot = shutil.which("chroot")
    if os.geteuid() != 0 or chroot is None or not os.path.exists(os.path.join(root, "bin/sh")):
        return None
    proc = subprocess.run(
        [chroot, root, "/bin/sh", "-c", "cat /tmp/hello.txt; echo from inside > /tmp/inside.txt; uname -s"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    if proc.returncode != 0:
        raise RootFSError(ErrorId.ErrBackendFailed, f"shell in the root failed: {proc.stderr.strip()}")
    return proc.stdout
