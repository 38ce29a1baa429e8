"""The ``rootfs`` command.

Exit status: 0 success, 1 an operation failed (the message on stderr names
the error id), 2 a usage error. Expected errors never print a traceback.
Imports are deferred to the command that needs them, so start-up stays cheap.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootfs_core.core import RootFS

DEFAULT_BASE_DIR = "/var/lib/rootfs"


class _Elapsed(logging.Formatter):
    """``-v`` lines carry the milliseconds since start, so slow steps stand
    out; warnings say so, with or without ``-v``."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        kind = "warning: " if record.levelno >= logging.WARNING else ""
        if not self.verbose:
            return f"rootfs: {kind}{record.getMessage()}"
        return f"rootfs [{(record.created - _START_WALL) * 1000:8.1f} ms] {kind}{record.getMessage()}"


_START_WALL = time.time()


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-dir",
        default=argparse.SUPPRESS,
        help=f"read-write base directory (env ROOTFS_BASE_DIR; default {DEFAULT_BASE_DIR})",
    )
    common.add_argument(
        "--backend", default=argparse.SUPPRESS, help="force a backend (env ROOTFS_BACKEND, or config file)"
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log each step"
    )
    parser = argparse.ArgumentParser(
        prog="rootfs", parents=[common], description="Disposable writable roots from a read-only prototype."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", parents=[common], help="make a root from a prototype; print its path")
    gen.add_argument("prototype", nargs="?", help="prototype directory (default: the sample prototype)")
    gen.add_argument("--size", help="maximum size of the writable layer, e.g. 64M (backends that support it)")
    gen.add_argument(
        "-o", "--option", action="append", default=[], metavar="KEY=VALUE", help="a backend option"
    )
    gen.add_argument("--json", action="store_true", help="print a JSON object")

    rem = sub.add_parser("remove", parents=[common], help="remove a generated root")
    rem.add_argument("root", metavar="ROOT_OR_ID")
    rem.add_argument("--json", action="store_true", help="print a JSON object")

    lst = sub.add_parser("list", parents=[common], help="list instances")
    lst.add_argument("--json", action="store_true", help="print a JSON array")

    bck = sub.add_parser("backends", parents=[common], help="list backends, their support and priority")
    bck.add_argument("--json", action="store_true", help="print a JSON array")

    gc = sub.add_parser("gc", parents=[common], help="clean up instances left incomplete by a crash")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be cleaned up")
    gc.add_argument("--json", action="store_true", help="print a JSON object")

    smp = sub.add_parser("sample", parents=[common], help="build the sample prototype; print its path")
    smp.add_argument("directory", nargs="?", help="where (default: /var/cache/rootfs/sample-prototype)")

    demo = sub.add_parser(
        "demo", parents=[common], help="the whole job on the sample prototype: generate, use, remove"
    )
    demo.add_argument("--json", action="store_true", help="print a JSON object")
    return parser


def _options(args: argparse.Namespace) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise _UsageError(f"option {item!r} is not KEY=VALUE")
        options[key] = value
    if args.size is not None:
        options["size"] = args.size
    return options


class _UsageError(Exception):
    pass


def _base_dir(args: argparse.Namespace) -> str:
    from rootfs_core.selection import load_config

    chosen = (
        getattr(args, "base_dir", None) or os.environ.get("ROOTFS_BASE_DIR") or load_config().get("base_dir")
    )
    if chosen:
        return str(chosen)
    os.makedirs(DEFAULT_BASE_DIR, mode=0o755, exist_ok=True)  # only the default is created on demand
    return DEFAULT_BASE_DIR


def _open(args: argparse.Namespace, *, sweep: bool = True) -> RootFS:
    from rootfs_core.core import RootFS

    return RootFS(_base_dir(args), backend=getattr(args, "backend", None), sweep=sweep)


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(data, indent=None if isinstance(data, dict) else 1))
    elif text:
        print(text)


def _cmd_generate(args: argparse.Namespace) -> None:
    from rootfs_core.sample import ensure_sample

    rfs = _open(args)
    options = _options(args)
    prototype = args.prototype or ensure_sample()
    started = time.monotonic()
    root = rfs.generate(prototype, **options)
    seconds = time.monotonic() - started
    instance = rfs.instance(root)
    assert instance is not None
    data = {
        "root": root,
        "id": instance.id,
        "backend": instance.backend,
        "prototype": instance.prototype,
        "options": instance.options,
        "seconds": round(seconds, 6),
    }
    _emit(args, data, root)


def _cmd_remove(args: argparse.Namespace) -> None:
    rfs = _open(args)
    started = time.monotonic()
    rfs.remove(args.root)
    _emit(args, {"removed": args.root, "seconds": round(time.monotonic() - started, 6)}, "")


def _cmd_list(args: argparse.Namespace) -> None:
    instances = _open(args).instances()
    rows = [
        {
            "id": i.id,
            "root": i.root,
            "backend": i.backend,
            "prototype": i.prototype,
            "state": i.state,
            "created": i.created,
            "options": i.options,
        }
        for i in instances
    ]
    lines = [f"{i.id}  {i.state:<10}  {i.backend:<10}  {i.root}  <- {i.prototype}" for i in instances]
    _emit(args, rows, "\n".join(lines))


def _cmd_backends(args: argparse.Namespace) -> None:
    from rootfs_core.registry import distributions_by_backend

    statuses = _open(args).backends()
    distributions = distributions_by_backend()
    rows = [
        {
            "name": s.name,
            "priority": s.priority,
            "supported": s.supported,
            "reason": s.reason,
            "selected": s.selected,
            "distribution": distributions.get(s.name),
            "entry_point": s.target,
        }
        for s in statuses
    ]
    lines = []
    for row in rows:
        mark = "*" if row["selected"] else " "
        verdict = "supported" if row["supported"] else f"unsupported: {row['reason']}"
        lines.append(
            f"{mark} {row['name']:<16} {row['priority'] if row['priority'] is not None else '-':>4}  "
            f"{row['distribution'] or '?':<22} {verdict}"
        )
    if not rows:
        lines.append("no backend installed in the entry-point group rootfs.backends")
    _emit(args, rows, "\n".join(lines))


def _cmd_gc(args: argparse.Namespace) -> None:
    report = _open(args, sweep=False).gc(dry_run=args.dry_run)
    verb = "would clean up" if args.dry_run else "cleaned up"
    lines = [f"{verb} incomplete instance {i}" for i in report.instances]
    lines += [f"{verb} unexplained mount {p}" for p in report.unmounted]
    lines += [f"{verb} orphan directory {p}" for p in report.orphans]
    data = {
        "dry_run": args.dry_run,
        "instances": report.instances,
        "unmounted": report.unmounted,
        "orphans": report.orphans,
    }
    _emit(args, data, "\n".join(lines) or "nothing to clean up")


def _cmd_sample(args: argparse.Namespace) -> None:
    from rootfs_core.sample import DEFAULT_SAMPLE_DIR, build_sample

    path = os.path.abspath(args.directory or DEFAULT_SAMPLE_DIR)
    if os.path.exists(path):
        print(path)
        return
    what = build_sample(path)
    print(f"built {what}", file=sys.stderr)
    print(path)


def _cmd_demo(args: argparse.Namespace) -> None:
    from rootfs_core.demo import run_demo

    report = run_demo(_open(args), quiet=args.json)
    _emit(args, report, "")


_COMMANDS = {
    "generate": _cmd_generate,
    "remove": _cmd_remove,
    "list": _cmd_list,
    "backends": _cmd_backends,
    "gc": _cmd_gc,
    "sample": _cmd_sample,
    "demo": _cmd_demo,
}


def main(argv: Sequence[str] | None = None) -> int:
    # Paths are bytes to the kernel and may not be UTF-8: print them as they
    # are whatever the locale, as Python itself does under C.UTF-8.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape")
    parser = _parser()
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Elapsed(verbose))
    logger = logging.getLogger("rootfs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO if verbose else logging.WARNING)
    from rootfs_core.errors import RootFSError

    try:
        _COMMANDS[args.command](args)
    except _UsageError as exc:
        parser.error(str(exc))
    except RootFSError as exc:
        print(f"rootfs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rootfs: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
