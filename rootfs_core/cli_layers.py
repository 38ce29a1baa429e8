"""The command line of layers: ``commit``, ``layers``, ``layer rm``.

``rootfs_core.cli`` merges ``PARSERS`` and ``COMMANDS`` into its own tables;
what both share comes from ``cli_common``, so neither imports the other.
"""

from __future__ import annotations

import argparse
import time

from rootfs_core.cli_common import age, created_at, emit, nonempty, open_rootfs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


def _add_commit(sub: Any, common: argparse.ArgumentParser) -> None:
    com = sub.add_parser(
        "commit",
        parents=[common],
        help="take a root apart into a portable layer (into the layer store, or DEST)",
    )
    com.add_argument("root", metavar="ROOT_OR_ID", type=nonempty)
    com.add_argument(
        "dest", metavar="DEST", nargs="?", type=nonempty, help="a new directory (default: the layer store)"
    )
    com.add_argument("--json", action="store_true", help="print a JSON object")


def _add_layers(sub: Any, common: argparse.ArgumentParser) -> None:
    lay = sub.add_parser("layers", parents=[common], help="list the stored layers")
    shown = lay.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print a JSON array")
    shown.add_argument("-q", "--quiet", action="store_true", help="print the ids only, one a line")


def _add_layer(sub: Any, common: argparse.ArgumentParser) -> None:
    one = sub.add_parser("layer", parents=[common], help="act on stored layers (rm)")
    what = one.add_subparsers(dest="layer_command", required=True, metavar="ACTION")
    rm = what.add_parser("rm", parents=[common], help="delete stored layers no instance uses")
    rm.add_argument("layers", metavar="LAYER_ID", nargs="+", type=nonempty)
    rm.add_argument("--json", action="store_true", help="print a JSON object")


def _cmd_commit(args: argparse.Namespace) -> None:
    rfs = open_rootfs(args)
    result = rfs.commit(args.root, args.dest)
    data: dict[str, Any] = {
        "layer": result.layer,
        "bytes": result.bytes,
        "inodes": result.inodes,
        "seconds": round(result.seconds, 3),
    }
    if result.id is not None:
        data["id"] = result.id
    emit(args, data, result.id if result.id is not None else result.layer)


def _cmd_layers(args: argparse.Namespace) -> None:
    rfs = open_rootfs(args)
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
            "created_at": created_at(layer.created),
            "instances": layer.instances,
        }
        for layer in layers
    ]
    now = time.time()
    rows = [
        f"{layer.id}  {layer.bytes:>12}  {layer.inodes:>8}  {age(now - layer.created):>5}  "
        f"{','.join(layer.instances) or '-'}"
        for layer in layers
    ]
    header = f"{'ID':<12}  {'BYTES':>12}  {'INODES':>8}  {'AGE':>5}  USED BY"
    emit(args, data, "\n".join([header, *rows]))


def _cmd_layer_rm(args: argparse.Namespace) -> int:
    from rootfs_core.errors import RootFSError

    rfs = open_rootfs(args)
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
    emit(args, results[0] if len(results) == 1 else {"layers": results}, "")
    return status


COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {
    "commit": _cmd_commit,
    "layers": _cmd_layers,
    "layer": _cmd_layer_rm,  # its one action, rm
}


# Sub-command -> what adds its parser (after ``cli``'s own in help).
PARSERS: dict[str, Callable[[Any, argparse.ArgumentParser], None]] = {
    "commit": _add_commit,
    "layers": _add_layers,
    "layer": _add_layer,
}
