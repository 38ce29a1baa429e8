"""High priority, never supported: selection must pass it over."""

from __future__ import annotations

from rootfs_core.context import BuildContext
from rootfs_core.hookspecs import BackendInfo, Probe, hookimpl


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    return BackendInfo(priority=390, summary="never works")


@hookimpl
def rootfs_probe(ctx: BuildContext) -> Probe:
    return Probe.no("this host lacks the imaginary filesystem")


@hookimpl
def rootfs_generate(ctx: BuildContext) -> None:
    raise AssertionError("never selected, so never called")
