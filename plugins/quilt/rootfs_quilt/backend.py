"""The quilt: the prototype bind-mounted read-only as the root, and a writable
copy of each of a few directories bind-mounted over it.

It needs nothing but bind mounts and a copier, so it works where no union
filesystem does; it pays with a full copy of each writable directory per
root, which is why it sits lowest among the in-tree backends. Everything is
done through the context's journaled primitives, so the core can undo a
failed generate and a remove without help from this module.
"""

from __future__ import annotations

import dataclasses
import errno
import os

from rootfs_core.context import BuildContext
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.hookspecs import BackendInfo, Probe, hookimpl

PRIORITY = 150  # the middle of hookspecs.BAND_COPY
DEFAULT_DIRS = "proc,dev,etc,home,sbin,var,tmp"  # the seed's list
EMPTY_DIR = "tmp"  # starts empty (mode 1777) instead of as a copy
WRITABLE = "rw"  # the instance's directory holding the writable copies
_NAME_CHARS = 60  # of the target path kept in a copy's name, to stay far below NAME_MAX


@dataclasses.dataclass(frozen=True)
class Patch:
    """One directory of the list: its normalised relative path, and whether
    a prototype may lack it."""

    name: str
    optional: bool


def parse_dirs(value: str) -> list[Patch]:
    """Parse the ``dirs`` option: comma-separated relative paths, each with a
    trailing ``?`` if optional. Refuses what could name something outside
    the root, so a typo never turns into a mount somewhere unexpected."""
    patches = []
    for item in value.split(","):
        text = item.strip()
        optional = text.endswith("?")
        text = text.removesuffix("?").rstrip()
        parts = [p for p in text.split("/") if p not in ("", ".")]
        if text.startswith("/") or ".." in parts or not parts:
            raise RootFSError(
                ErrorId.ErrBadOption,
                f"dirs: {item.strip()!r} is not a relative path below the root "
                f"(expected e.g. {DEFAULT_DIRS!r}, a trailing '?' marks a directory optional)",
            )
        patches.append(Patch("/".join(parts), optional))
    return patches


@hookimpl
def rootfs_backend_info() -> BackendInfo:
    return BackendInfo(
        priority=PRIORITY,
        summary="read-only bind of the prototype, writable copies bound over a few directories",
        options={
            "dirs": f"comma-separated writable directories (default {DEFAULT_DIRS}); "
            "a trailing '?' marks one the prototype may lack"
        },
    )


@hookimpl
def rootfs_probe(ctx: BuildContext) -> Probe:
    """Build a one-directory quilt over the core's tiny prototype and check
    that the root refuses writes with EROFS while the patch takes them."""
    try:
        _quilt(ctx, [Patch("dir", optional=False)])
    except RootFSError as exc:
        if isinstance(exc.cause, OSError) and exc.cause.errno == errno.EPERM:
            return Probe.no(
                "bind mounts are not permitted (EPERM): the quilt needs CAP_SYS_ADMIN in its mount "
                f"namespace, i.e. root or a user and mount namespace of its own ({exc})"
            )
        return Probe.no(f"a test quilt could not be built: {exc}")
    outside = _write_errno(os.path.join(ctx.root, "probe-outside"))
    if outside != errno.EROFS:
        got = "it succeeded" if outside is None else os.strerror(outside)
        return Probe.no(f"a write outside the writable directories should fail with EROFS, but {got}")
    inside = _write_errno(os.path.join(ctx.root, "dir", "probe-inside"))
    if inside is not None:
        return Probe.no(f"a write inside a writable directory failed: {os.strerror(inside)}")
    if os.path.lexists(os.path.join(ctx.prototype, "dir", "probe-inside")):
        return Probe.no("a write inside a writable directory reached the prototype")
    return Probe.ok()


@hookimpl
def rootfs_generate(ctx: BuildContext) -> None:
    _quilt(ctx, parse_dirs(ctx.options.get("dirs", DEFAULT_DIRS)))


def _quilt(ctx: BuildContext, patches: list[Patch]) -> None:
    """Mount the root read-only, then each patch over its resolved target.

    Targets are resolved inside the root before anything is copied, so a
    missing directory fails early, and mounted parents first, so a patch
    nested in another one is not hidden by it.
    """
    ctx.bind(ctx.prototype, ctx.root, readonly=True, error=ErrorId.ErrBindMountRoot)
    targets = _targets(ctx, patches)
    ctx.mkdir(WRITABLE, 0o700, error=ErrorId.ErrCreateTempDir)
    for index, target in enumerate(sorted(targets)):
        relative = os.path.relpath(target, ctx.root)
        # The index keeps names unique whatever the paths; the rest is for humans.
        name = f"{WRITABLE}/{index}-{relative.replace('/', '_')[:_NAME_CHARS]}"
        if targets[target].name == EMPTY_DIR:
            copy = ctx.scratch_dir(name, 0o1777, error=ErrorId.ErrOverlayTempDir)
        else:
            # The same place in the prototype as the target in the root (the
            # root is a bind of it), so the copy is exactly what it covers.
            copy = ctx.copy_dir(os.path.join(ctx.prototype, relative), name, error=ErrorId.ErrOverlayDir)
        ctx.bind(copy, target, error=ErrorId.ErrBindMountSubdir)


def _targets(ctx: BuildContext, patches: list[Patch]) -> dict[str, Patch]:
    """Where each patch lands, resolved inside the root as the container
    would see it (``sbin -> usr/sbin`` lands on ``usr/sbin``; ``var -> /etc``
    on the root's ``etc``, never the host's). Patches that land on the same
    directory are mounted once, the first listed winning."""
    targets: dict[str, Patch] = {}
    for patch in patches:
        try:
            target = ctx.resolve_in_root(patch.name)
        except RootFSError:
            if patch.optional:
                continue
            raise
        if target == ctx.root:
            ctx.fail(
                ErrorId.ErrPathEscapesRoot,
                f"{patch.name!r} leads to the root itself in the prototype; the root must stay read-only",
            )
        targets.setdefault(target, patch)
    return targets


def _write_errno(path: str) -> int | None:
    """Try to create ``path``: None if that worked, else the errno. Whatever
    is created lands in a disposable tree of the probe instance, deleted with it."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        return exc.errno
    os.close(fd)
    return None
