"""What every ``rootfs`` sub-command shares: the common options, the base
directory and ``RootFS`` a command works on, and how results are printed.

Both command modules (``cli`` and ``cli_layers``) import it and not each
other, so neither has to import the other lazily to avoid a cycle.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from rootfs_core.core import RootFS

DEFAULT_BASE_DIR = "/var/lib/rootfs"


class UsageError(Exception):
    """A bad combination of arguments that the parser cannot see: exit 2
    with the parser's usage line."""


def nonempty(value: str) -> str:
    """An argument that must say something: an empty one is a usage error,
    never a silent fall-back to the default (``generate ""`` is not the
    sample prototype, ``--base-dir ""`` not /var/lib/rootfs)."""
    if not value:
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def common_options(backend_help: str) -> argparse.ArgumentParser:
    """The options every command takes, before or after its name."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-dir",
        type=nonempty,
        default=argparse.SUPPRESS,
        help=f"read-write base directory (env ROOTFS_BASE_DIR; default {DEFAULT_BASE_DIR})",
    )
    common.add_argument("--backend", type=nonempty, default=argparse.SUPPRESS, help=backend_help)
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log each step"
    )
    return common


def base_dir(args: argparse.Namespace) -> str:
    """``--base-dir``, else ``ROOTFS_BASE_DIR``, else ``base_dir`` in the
    configuration file, else the default. An empty variable or setting counts
    as unset (an empty ``--base-dir`` never gets here: the parser refuses it)."""
    from rootfs_core.selection import load_config

    chosen = (
        getattr(args, "base_dir", None) or os.environ.get("ROOTFS_BASE_DIR") or load_config().get("base_dir")
    )
    if chosen:
        return str(chosen)
    os.makedirs(DEFAULT_BASE_DIR, mode=0o755, exist_ok=True)  # only the default is created on demand
    return DEFAULT_BASE_DIR


def open_rootfs(args: argparse.Namespace, *, sweep: bool = True) -> RootFS:
    """The ``RootFS`` of the command, remembered in ``args.opened`` (an error
    message may want to ask it more). Long copies show their progress when
    stderr is a terminal, and only then."""
    from rootfs_core.core import RootFS

    progress = None
    if sys.stderr.isatty():
        from rootfs_core.progress import TerminalProgress

        progress = args.display = TerminalProgress(sys.stderr)
    rfs = RootFS(base_dir(args), backend=getattr(args, "backend", None), sweep=sweep, progress=progress)
    args.opened = rfs
    return rfs


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    """``data`` as JSON when the command was given ``--json``, else ``text``
    (nothing when it is empty)."""
    if getattr(args, "json", False):
        print(json.dumps(data, indent=None if isinstance(data, dict) else 1))
    elif text:
        print(text)


def age(seconds: float) -> str:
    """``42s``, ``5m``, ``3h``, ``12d``: a duration the way ``list`` shows
    how long ago something was made."""
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def created_at(epoch: float) -> str | None:
    """ISO 8601 in UTC (``2026-12-01T22:41:07+00:00``); None when unknown
    (a damaged record)."""
    if not epoch:
        return None
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).isoformat(timespec="seconds")
