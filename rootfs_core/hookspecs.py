"""The contract between the core and a backend, as pluggy hook specifications.

A backend is any object (usually a module) with ``@hookimpl`` functions named
below, published in the entry-point group ``rootfs.backends``; the entry
point's name is the backend's name. pluggy checks each implementation's
signature against these specifications when the backend is registered, so a
backend with a misspelt hook or argument is rejected at load time (and shown
as broken by ``rootfs backends``) instead of failing half-way through a mount.

A backend never creates, mounts, unmounts or deletes anything itself: it
describes its mounts through the context's primitives, and the core journals
every one so that any failure, or a later remove, can undo it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from rootfs_core.context import BuildContext, RemoveContext

PROJECT = "rootfs"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

# Priority bands: the highest priority supported backend is selected. In-tree
# backends sit in the middle of their band so a third party can place itself
# just above or below any of them.
BAND_KERNEL_UNION = range(300, 400)  # kernel union filesystems: overlayfs (350)
BAND_OTHER_UNION = range(200, 300)  # out-of-tree or userspace unions: aufs (250)
BAND_COPY = range(100, 200)  # bind mounts and copies, no union: quilt (150)
BAND_LAST_RESORT = range(1, 100)  # experiments and slow fallbacks
PRIORITY_RANGE = range(1, 400)

# What ``ctx.prototype`` holds during a probe (path -> content), so a probe
# can check a write, a delete and a rename through its mount.
PROBE_PROTOTYPE = {"file": b"lower\n", "dir/inner": b"inner\n"}


@dataclasses.dataclass(frozen=True)
class BackendInfo:
    """What a backend says of itself.

    ``options`` maps each option name the backend accepts (``rootfs generate
    -o NAME=VALUE``) to a one-line help text; the core refuses any other.
    ``max_layers`` is how many layers it can stack (``ctx.layers``, bottom
    first; 1: only a single prototype) and ``read_only`` whether it can make
    a read-only view (``ctx.read_only``). The core refuses a request the
    backend cannot serve before anything is made, and selection passes over
    a backend that cannot serve it.
    """

    priority: int
    summary: str
    options: dict[str, str] = dataclasses.field(default_factory=dict)
    max_layers: int = 1
    read_only: bool = False

    def cannot_serve(self, layers: int, read_only: bool) -> str | None:
        """Why this backend cannot make such a root, or None if it can."""
        if layers > self.max_layers:
            most = "one layer" if self.max_layers == 1 else f"at most {self.max_layers} layers"
            return f"it stacks {most}, not {layers}"
        if read_only and not self.read_only:
            return "it makes no read-only views"
        return None


@dataclasses.dataclass(frozen=True)
class Probe:
    """A backend's verdict on this host: supported, or not and why."""

    supported: bool
    reason: str | None = None

    @classmethod
    def ok(cls) -> Probe:
        return cls(True, None)

    @classmethod
    def no(cls, reason: str) -> Probe:
        return cls(False, reason)


class BackendSpec:
    """Hook specifications every backend implements (``rootfs_remove`` is optional)."""

    @hookspec(firstresult=True)
    def rootfs_backend_info(self) -> BackendInfo:  # type: ignore[empty-body]
        """Describe the backend: priority and accepted options. Must be cheap."""

    @hookspec(firstresult=True)
    def rootfs_probe(self, ctx: BuildContext) -> Probe:  # type: ignore[empty-body]
        """Try the technique for real in a throw-away instance and say whether
        it works here. Everything done through ``ctx`` is undone afterwards, so
        a probe may mount freely. Raising counts as "not supported"."""

    @hookspec
    def rootfs_generate(self, ctx: BuildContext) -> None:
        """Make ``ctx.root`` a writable view of ``ctx.prototype`` using only
        ``ctx``'s primitives. Raise ``RootFSError`` to fail: the core undoes
        every step already taken."""

    @hookspec
    def rootfs_remove(self, ctx: RemoveContext) -> None:
        """Optional: release what the journal cannot (a helper process, say)
        before the core unmounts and deletes the instance's steps in reverse."""
