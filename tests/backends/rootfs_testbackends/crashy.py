"""Does real work, then kills its own process at a chosen point, as a crash
would (``-o crash_after=N``: after N mounts). For the crash-recovery tests."""

from __future__ import annotations

import os
import signal

from rootfs_core.context import BuildContext
from rootfs_core.hookspecs import BackendInfo, Probe, hookimpl


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    return BackendInfo(
        priority=110, summary="crashes on purpose", options={"crash_after": "mounts before dying"}
    )


@hookimpl
def rootfs_probe(ctx: BuildContext) -> Probe:
    return Probe.ok()


@hookimpl
def rootfs_generate(ctx: BuildContext) -> None:
    crash_after = int(ctx.options.get("crash_after", "-1"))
    mounts = 0
    ctx.bind(ctx.prototype, ctx.root, readonly=True)
    mounts += 1
    if mounts == crash_after:
        os.kill(os.getpid(), signal.SIGKILL)
    upper = ctx.scratch_dir("etc-copy")
    ctx.bind(upper, ctx.resolve_in_root("etc"))
    mounts += 1
    if mounts == crash_after:
        os.kill(os.getpid(), signal.SIGKILL)
