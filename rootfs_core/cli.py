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
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootfs_core.core import RootFS
    from rootfs_core.errors import RootFSError

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


def _nonempty(value: str) -> str:
    """An argument that must say something: an empty one is a usage error,
    never a silent fall-back to the default (``generate ""`` is not the
    sample prototype, ``--base-dir ""`` not /var/lib/rootfs)."""
    if not value:
        raise argparse.ArgumentTypeError("must not be empty")
    return value


class _Version(argparse.Action):
    """``--version``: the core's version and every installed backend's
    distribution and version. Reading installed metadata costs tens of
    milliseconds, so it happens only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, help: str | None = None) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        print(_version_text())
        parser.exit()


def _version_text() -> str:
    from importlib.metadata import PackageNotFoundError, version

    import rootfs_core
    from rootfs_core.registry import ENTRY_POINT_GROUP, distributions_by_backend

    lines = [f"rootfs-core {rootfs_core.__version__}", "backends:"]
    backends = distributions_by_backend()
    width = max(map(len, backends), default=0)
    for name, dist in sorted(backends.items()):
        try:
            dist_version = version(dist)
        except PackageNotFoundError:
            dist_version = "?"
        lines.append(f"  {name:<{width}}  {dist} {dist_version}")
    if not backends:
        lines.append(f"  none installed (entry-point group {ENTRY_POINT_GROUP})")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--base-dir",
        type=_nonempty,
        default=argparse.SUPPRESS,
        help=f"read-write base directory (env ROOTFS_BASE_DIR; default {DEFAULT_BASE_DIR})",
    )
    common.add_argument(
        "--backend",
        type=_nonempty,
        default=argparse.SUPPRESS,
        help="force a backend (env ROOTFS_BACKEND, or config file)",
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log each step"
    )
    parser = argparse.ArgumentParser(
        prog="rootfs", parents=[common], description="Disposable writable roots from a read-only prototype."
    )
    parser.add_argument(
        "--version", action=_Version, help="print the versions of rootfs-core and of every backend, and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gen = sub.add_parser("generate", parents=[common], help="make a root from a prototype; print its path")
    gen.add_argument(
        "prototype", nargs="?", type=_nonempty, help="prototype directory (default: the sample prototype)"
    )
    gen.add_argument("--size", help="maximum size of the writable layer, e.g. 64M (backends that support it)")
    gen.add_argument(
        "-o", "--option", action="append", default=[], metavar="KEY=VALUE", help="a backend option"
    )
    gen.add_argument("--json", action="store_true", help="print a JSON object")

    rem = sub.add_parser("remove", parents=[common], help="remove generated roots")
    rem.add_argument("roots", metavar="ROOT_OR_ID", nargs="+", type=_nonempty)
    rem.add_argument(
        "--missing-ok", action="store_true", help="a root that does not exist (any more) is not an error"
    )
    rem.add_argument("--json", action="store_true", help="print a JSON object (an array for several)")

    lst = sub.add_parser("list", parents=[common], help="list instances")
    lst.add_argument("--json", action="store_true", help="print a JSON array")

    bck = sub.add_parser("backends", parents=[common], help="list backends, their support and priority")
    bck.add_argument("--json", action="store_true", help="print a JSON array")

    gc = sub.add_parser("gc", parents=[common], help="clean up instances left incomplete by a crash")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be cleaned up")
    gc.add_argument("--json", action="store_true", help="print a JSON object")

    smp = sub.add_parser("sample", parents=[common], help="build the sample prototype; print its path")
    smp.add_argument(
        "directory", nargs="?", type=_nonempty, help="where (default: /var/cache/rootfs/sample-prototype)"
    )

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


def _cmd_remove(args: argparse.Namespace) -> int:
    """Each root in turn, each reported; one failure does not stop the rest,
    but makes the exit status 1. A root kept for copies of its mounts in
    other namespaces is a success with ``"finished": false``."""
    from rootfs_core.errors import RootFSError

    rfs = _open(args)
    results: list[dict[str, Any]] = []
    for target in args.roots:
        started = time.monotonic()
        try:
            finished = rfs.remove(target, missing_ok=args.missing_ok)
        except RootFSError as exc:
            if len(args.roots) == 1:
                raise
            print(f"rootfs: {exc}", file=sys.stderr)
            results.append({"root": target, **_error_json(exc)})
            continue
        result = {"removed": target, "finished": finished, "seconds": round(time.monotonic() - started, 6)}
        results.append(result)
    _emit(args, results[0] if len(results) == 1 else results, "")
    return 1 if any("error" in r for r in results) else 0


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


def _cmd_gc(args: argparse.Namespace) -> int:
    report = _open(args, sweep=False).gc(dry_run=args.dry_run)
    verb = "would clean up" if args.dry_run else "cleaned up"
    lines = [f"{verb} incomplete instance {i}" for i in report.instances]
    lines += [f"{verb} unexplained mount {p}" for p in report.unmounted]
    lines += [f"{verb} orphan directory {p}" for p in report.orphans]
    lines += [f"kept {i}: copies of its mounts live on in other mount namespaces" for i in report.waiting]
    for what, why in report.failed.items():
        print(f"rootfs: could not clean up {what}: {why}", file=sys.stderr)
    data = {
        "dry_run": args.dry_run,
        "instances": report.instances,
        "unmounted": report.unmounted,
        "orphans": report.orphans,
        "waiting": report.waiting,
        "failed": report.failed,
    }
    _emit(args, data, "\n".join(lines) or ("" if report.failed else "nothing to clean up"))
    return 1 if report.failed else 0


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


def _error_json(exc: RootFSError) -> dict[str, str]:
    """``{"error": id, "message": ...}``: the message is the stderr line's
    text after the id (with the cause and any clean-up errors)."""
    text = str(exc)
    prefix = f"{exc.error_id.name}: "
    return {"error": exc.error_id.name, "message": text[len(prefix) :] if text.startswith(prefix) else text}


_COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {
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
        status = _COMMANDS[args.command](args)
    except _UsageError as exc:
        parser.error(str(exc))
    except RootFSError as exc:
        if getattr(args, "json", False):
            # Scripts that asked for JSON get their failure as JSON too, on
            # stdout, one line; people still get the line on stderr.
            print(json.dumps(_error_json(exc)))
        print(f"rootfs: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rootfs: interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
