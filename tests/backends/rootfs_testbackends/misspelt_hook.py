"""A backend whose optional remove hook is misspelt (``rootfs_remov``).

pluggy's ``register`` accepts it (an implementation of a hook no
specification names), so it would load and its remove hook would silently
never run: rootfs lists it as broken, naming the unknown hook."""

from __future__ import annotations

from rootfs_core.context import BuildContext, RemoveContext
from rootfs_core.hookspecs import BackendInfo, Probe, hookimpl


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    return BackendInfo(priority=360, summary="misspelt optional hook")


@hookimpl
def rootfs_probe(ctx: BuildContext) -> Probe:
    return Probe.ok()


@hookimpl
def rootfs_generate(ctx: BuildContext) -> None:
    raise AssertionError("never called")


@hookimpl
def rootfs_remov(ctx: RemoveContext) -> None:
    raise AssertionError("never called")
