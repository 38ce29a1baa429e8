"""Its probe crashes: that must read as "not supported", with the error."""

from __future__ import annotations

from rootfs_core.context import BuildContext
from rootfs_core.hookspecs import BackendInfo, Probe, hookimpl


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    return BackendInfo(priority=380, summary="probe raises")


@hookimpl
def rootfs_probe(ctx: BuildContext) -> Probe:
    raise RuntimeError("probe exploded")


@hookimpl
def rootfs_generate(ctx: BuildContext) -> None:
    raise AssertionError("never selected, so never called")
