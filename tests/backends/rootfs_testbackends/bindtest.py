"""A real, minimal backend: the prototype bound read-only, a writable copy of
``etc`` over the root's ``etc``, and a tmpfs on ``tmp``. Every kind of
primitive is used, so fault injection reaches each one."""

from __future__ import annotations

import os

from rootfs_core.context import BuildContext
from rootfs_core.errors import ErrorId
from rootfs_core.hookspecs import BackendInfo, Probe, hookimpl


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    return BackendInfo(priority=120, summary="test backend", options={"tmp_size": "size of the tmpfs on tmp"})


@hookimpl
def rootfs_probe(ctx: BuildContext) -> Probe:
    ctx.bind(ctx.prototype, ctx.root, readonly=True)
    if not os.path.isfile(os.path.join(ctx.root, "file")):
        return Probe.no("bind mount shows nothing")
    return Probe.ok()


@hookimpl
def rootfs_generate(ctx: BuildContext) -> None:
    ctx.bind(ctx.prototype, ctx.root, readonly=True)
    etc = ctx.copy_dir(os.path.join(ctx.prototype, "etc"), "etc")
    ctx.bind(etc, ctx.resolve_in_root("etc"))
    ctx.mkdir("tmpfs")
    size = ctx.options.get("tmp_size", "1M")
    ctx.mount(
        "tmpfs",
        ctx.resolve_in_root("tmp"),
        "tmpfs",
        data=f"size={size},mode=1777",
        error=ErrorId.ErrOverlayTempDir,
    )
