"""A backend whose optional remove hook lacks ``@hookimpl``: pluggy ignores
such a function, so it would never run; rootfs lists the backend as broken."""

from __future__ import annotations

from rootfs_core.context import BuildContext, RemoveContext
from rootfs_core.hookspecs import BackendInfo, Probe, hookimpl


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    return BackendInfo(priority=355, summary="unmarked optional hook")


@hookimpl
def rootfs_probe(ctx: BuildContext) -> Probe:
    return Probe.ok()


@hookimpl
def rootfs_generate(ctx: BuildContext) -> None:
    raise AssertionError("never called")


def rootfs_remove(ctx: RemoveContext) -> None:
    raise AssertionError("never called")
