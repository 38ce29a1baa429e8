"""The command line of layers: ``commit``, ``layers``, ``layer-rm``.

Wired into ``rootfs_core.cli`` by ``add_parsers(sub, common)`` (next to the
other sub-commands) and ``COMMANDS`` (merged into its command table).
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Callable
from typing import Any


def _nonempty(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    """The three sub-commands, on ``sub`` (``add_subparsers``' result)."""
    com = sub.add_parser(
        "commit",
        parents=[common],
        help="take a root apart into a portable layer (into the layer store, or DEST)",
    )
    com.add_argument("root", metavar="ROOT_OR_ID", type=_nonempty)
    com.add_argument(
        "dest", metavar="DEST", nargs="?", type=_nonempty, help="a new directory (default: the layer store)"
    )
    com.add_argument("--json", action="store_true", help="print a JSON object")

    lay = sub.add_parser("layers", parents=[common], help="list the stored layers")
    shown = lay.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print a JSON array")
    shown.add_argument("-q", "--quiet", action="store_true", help="print the ids only, one a line")

    one = sub.add_parser("layer", parents=[common], help="act on stored layers (rm)")
    what = one.add_subparsers(dest="layer_command", required=True, metavar="ACTION")
    rm = what.add_parser("rm", parents=[common], help="delete stored layers no instance uses")
    rm.add_argument("layers", metavar="LAYER_ID", nargs="+", type=_nonempty)
    rm.add_argument("--json", action="store_true", help="print a JSON object")


def _open(args: argparse.Namespace) -> Any:
    from rootfs_core import cli

    return cli._open(args)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    from rootfs_core import cli

    cli._emit(args, data, text)


def _cmd_commit(args: argparse.Namespace) -> None:
    rfs = _open(args)
    result = rfs.commit(args.root, args.dest)
    data: dict[str, Any] = {
        "layer": result.layer,
        "bytes": result.bytes,
        "inodes": result.inodes,
        "seconds": round(result.seconds, 3),
    }
    if result.id is not None:
        data["id"] = result.id
    _emit(args, data, result.id if result.id is not None else result.layer)


def _cmd_layers(args: argparse.Namespace) -> None:
    rfs = _open(args)
    layers = rfs.layers()
    if args.quiet:
        for layer in layers:
            print(layer.id)
        return
    data = [
        {
            "id": layer.id,
            "path": layer.path,
            "bytes": layer.bytes,
            "inodes": layer.inodes,
            "created": layer.created,
            "created_at": datetime.datetime.fromtimestamp(layer.created, datetime.UTC).isoformat(),
            "instances": layer.instances,
        }
        for layer in layers
    ]
    now = time.time()
    rows = [
        f"{layer.id}  {layer.bytes:>12}  {layer.inodes:>8}  {_age(now - layer.created):>5}  "
        f"{','.join(layer.instances) or '-'}"
        for layer in layers
    ]
    header = f"{'ID':<12}  {'BYTES':>12}  {'INODES':>8}  {'AGE':>5}  USED BY"
    _emit(args, data, "\n".join([header, *rows]))


def _cmd_layer_rm(args: argparse.Namespace) -> int:
    from rootfs_core.errors import RootFSError

    rfs = _open(args)
    results: list[dict[str, Any]] = []
    status = 0
    for layer_id in args.layers:
        try:
            rfs.remove_layer(layer_id)
            results.append({"id": layer_id, "removed": True})
        except RootFSError as exc:
            if len(args.layers) == 1:
                raise
            import sys

            print(f"rootfs: {exc.error_id.name}: {exc.message}", file=sys.stderr)
            results.append({"id": layer_id, "removed": False, "error": exc.error_id.name})
            status = 1
    _emit(args, results[0] if len(results) == 1 else {"layers": results}, "")
    return status


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {
    "commit": _cmd_commit,
    "layers": _cmd_layers,
    "layer": _cmd_layer_rm,  # its one action, rm
}
