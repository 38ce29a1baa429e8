"""A hook with an argument the specification does not have: rejected at load."""

from __future__ import annotations

from rootfs_core.hookspecs import BackendInfo, hookimpl


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    return BackendInfo(priority=370, summary="bad hooks")


@hookimpl
def rootfs_generate(ctx: object, prototype: str) -> None:
    raise AssertionError("never called")
