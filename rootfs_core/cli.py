"""The ``rootfs`` command.

Exit status: 0 success, 1 an operation failed (the message on stderr names
the error id), 2 a usage error. Expected errors never print a traceback.
Imports are deferred to the command that needs them, so start-up stays cheap.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from rootfs_core import log
from rootfs_core.cli_common import (
    DEFAULT_BASE_DIR,
    UsageError,
    age,
    common_options,
    created_at,
    emit,
    nonempty,
    open_rootfs,
)

if TYPE_CHECKING:
    from rootfs_core.core import Instance, RootFS
    from rootfs_core.errors import RootFSError


_START_WALL = time.time()


def _log_writer(verbose: bool) -> Callable[[int, str], None]:
    """Where the library's messages go (``rootfs_core.log``): warnings
    always, prefixed so; each step with ``-v``, with the milliseconds since
    start so slow steps stand out."""

    def write(level: int, text: str) -> None:
        if level < log.WARNING and not verbose:
            return
        kind = "warning: " if level >= log.WARNING else ""
        if verbose:
            print(f"rootfs [{(time.time() - _START_WALL) * 1000:8.1f} ms] {kind}{text}", file=sys.stderr)
        else:
            print(f"rootfs: {kind}{text}", file=sys.stderr)

    return write


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


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """The command line: every sub-command, or only ``command``'s. Building
    all of them is a few milliseconds of a call's budget and a call needs
    only its own; help, ``--version`` and mistakes get them all."""
    from rootfs_core import cli_layers

    common = common_options("force a backend (env ROOTFS_BACKEND, or config file)")
    parser = argparse.ArgumentParser(
        prog="rootfs", parents=[common], description="Disposable writable roots from a read-only prototype."
    )
    parser.add_argument(
        "--version", action=_Version, help="print the versions of rootfs-core and of every backend, and exit"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, add in {**_PARSERS, **cli_layers.PARSERS}.items():
        if command is None or name == command:
            add(sub, common)
    return parser


def _command_named(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names, if it plainly names a known one: the
    first word that is neither an option nor the value of ``--base-dir`` or
    ``--backend``. None when asked for help or the version."""
    from rootfs_core import cli_layers

    value_next = False
    for word in argv:
        if value_next:
            value_next = False
        elif word in ("-h", "--help", "--version", "--"):
            return None
        elif word in ("--base-dir", "--backend"):
            value_next = True
        elif not word.startswith("-"):
            return word if word in _PARSERS or word in cli_layers.PARSERS else None
    return None


def _add_generate(sub: Any, common: argparse.ArgumentParser) -> None:
    gen = sub.add_parser("generate", parents=[common], help="make a root from a prototype; print its path")
    gen.add_argument(
        "layers",
        nargs="*",
        metavar="LAYER",
        type=nonempty,
        help="prototype directory, then any layers over it, bottom first (default: the sample prototype)",
    )
    gen.add_argument("--read-only", action="store_true", help="a view: every write fails with EROFS")
    gen.add_argument("--size", help="maximum size of the writable layer, e.g. 64M (backends that support it)")
    gen.add_argument(
        "-o", "--option", action="append", default=[], metavar="KEY=VALUE", help="a backend option"
    )
    gen.add_argument("--json", action="store_true", help="print a JSON object")


def _add_mount(sub: Any, common: argparse.ArgumentParser) -> None:
    mnt = sub.add_parser("mount", parents=[common], help="mount again a root whose mounts are gone")
    mnt.add_argument("root", metavar="ROOT_OR_ID", type=nonempty)
    mnt.add_argument("--json", action="store_true", help="print a JSON object")


def _add_usage(sub: Any, common: argparse.ArgumentParser) -> None:
    use = sub.add_parser("usage", parents=[common], help="bytes and inodes of a root's writable layer")
    use.add_argument("root", metavar="ROOT_OR_ID", type=nonempty)
    use.add_argument("--json", action="store_true", help="print a JSON object")


def _add_remove(sub: Any, common: argparse.ArgumentParser) -> None:
    rem = sub.add_parser("remove", parents=[common], help="remove generated roots")
    rem.add_argument("roots", metavar="ROOT_OR_ID", nargs="+", type=nonempty)
    rem.add_argument(
        "--missing-ok", action="store_true", help="a root that does not exist (any more) is not an error"
    )
    rem.add_argument("--json", action="store_true", help="print a JSON object (an array for several)")


def _add_list(sub: Any, common: argparse.ArgumentParser) -> None:
    # In ``list``, --backend filters (forcing a backend means nothing there).
    filtering = common_options("only instances of this backend")
    lst = sub.add_parser("list", parents=[filtering], help="list instances")
    shown = lst.add_mutually_exclusive_group()
    shown.add_argument("--json", action="store_true", help="print a JSON array")
    shown.add_argument("-q", "--quiet", action="store_true", help="print the ids only, one a line")
    lst.add_argument("--state", choices=_states(), help="only instances in this state")
    lst.add_argument("--prototype", type=nonempty, metavar="DIR", help="only instances of this prototype")


def _states() -> list[str]:
    from rootfs_core.core import State

    return [state.value for state in State]


def _add_inspect(sub: Any, common: argparse.ArgumentParser) -> None:
    ins = sub.add_parser("inspect", parents=[common], help="everything known about one instance")
    ins.add_argument("root", metavar="ROOT_OR_ID", type=nonempty)
    ins.add_argument("--json", action="store_true", help="print a JSON object")


def _add_backends(sub: Any, common: argparse.ArgumentParser) -> None:
    bck = sub.add_parser("backends", parents=[common], help="list backends, their support and priority")
    bck.add_argument("--json", action="store_true", help="print a JSON array")


def _add_gc(sub: Any, common: argparse.ArgumentParser) -> None:
    gc = sub.add_parser("gc", parents=[common], help="clean up instances left incomplete by a crash")
    gc.add_argument("--dry-run", action="store_true", help="only say what would be cleaned up")
    gc.add_argument("--json", action="store_true", help="print a JSON object")


def _add_sample(sub: Any, common: argparse.ArgumentParser) -> None:
    smp = sub.add_parser("sample", parents=[common], help="build the sample prototype; print its path")
    smp.add_argument(
        "directory", nargs="?", type=nonempty, help="where (default: /var/cache/rootfs/sample-prototype)"
    )


def _add_demo(sub: Any, common: argparse.ArgumentParser) -> None:
    demo = sub.add_parser(
        "demo", parents=[common], help="the whole job on the sample prototype: generate, use, remove"
    )
    demo.add_argument("--json", action="store_true", help="print a JSON object")


def _add_completion(sub: Any, common: argparse.ArgumentParser) -> None:
    comp = sub.add_parser(
        "completion", parents=[common], help="print a shell completion script: rootfs completion bash|zsh"
    )
    comp.add_argument("shell", nargs="?", choices=("bash", "zsh"))
    # What the scripts ask for while completing; never a reason to fail.
    comp.add_argument("--list-ids", action="store_true", help=argparse.SUPPRESS)
    comp.add_argument("--list-backends", action="store_true", help=argparse.SUPPRESS)


def _add_unit(sub: Any, common: argparse.ArgumentParser) -> None:
    unit = sub.add_parser(
        "unit", parents=[common], help="print a systemd unit (gc: sweep crashed instances at boot)"
    )
    unit.add_argument("name", choices=("gc",))


# Sub-command -> what adds its parser, in the order help lists them (the
# layer commands follow, from ``cli_layers.PARSERS``).
_PARSERS: dict[str, Callable[[Any, argparse.ArgumentParser], None]] = {
    "generate": _add_generate,
    "mount": _add_mount,
    "usage": _add_usage,
    "remove": _add_remove,
    "list": _add_list,
    "inspect": _add_inspect,
    "backends": _add_backends,
    "gc": _add_gc,
    "sample": _add_sample,
    "demo": _add_demo,
    "completion": _add_completion,
    "unit": _add_unit,
}


def _options(args: argparse.Namespace) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"option {item!r} is not KEY=VALUE")
        options[key] = value
    if args.size is not None:
        options["size"] = args.size
    return options


def _cmd_generate(args: argparse.Namespace) -> None:
    rfs = open_rootfs(args)
    options = _options(args)
    layers = args.layers
    if not layers:
        from rootfs_core.sample import ensure_sample

        layers = [ensure_sample()]
    options = _with_configured_options(rfs, options, len(layers), args.read_only)
    started = time.monotonic()
    root = rfs.generate(*layers, read_only=args.read_only, **options)
    seconds = time.monotonic() - started
    instance = rfs.instance(root)
    if instance is None:
        from rootfs_core.errors import ErrorId, RootFSError

        raise RootFSError(
            ErrorId.ErrNoSuchRoot, f"{root} was removed by someone else before it was described"
        )
    data = {
        "root": root,
        "id": instance.id,
        "backend": instance.backend,
        "prototype": instance.prototype,
        "layers": instance.layers,
        "read_only": instance.read_only,
        "options": instance.options,
        "seconds": round(seconds, 6),
    }
    emit(args, data, root)


def _with_configured_options(
    rfs: RootFS, options: dict[str, str], layers: int, read_only: bool
) -> dict[str, str]:
    """``options`` (the command line's) over the configuration file's
    defaults for the backend that will be used (``[options.NAME]``). The
    backend is chosen first only when the file has such defaults at all."""
    from rootfs_core.selection import default_options, read_config

    if not read_config().options:
        return options
    name = rfs.selected_backend(layers=layers, read_only=read_only)
    info = rfs._get_registry().get(name).info
    return {**default_options(name, info.options if info else {}), **options}


def _cmd_mount(args: argparse.Namespace) -> None:
    root = open_rootfs(args).mount(args.root)
    emit(args, {"root": root}, root)


def _cmd_usage(args: argparse.Namespace) -> None:
    found = open_rootfs(args).usage(args.root)
    data = {"id": found.id, "bytes": found.bytes, "inodes": found.inodes}
    emit(args, data, f"{found.bytes} bytes in {found.inodes} inodes")


def _cmd_remove(args: argparse.Namespace) -> int:
    """Each root in turn, each reported; one failure does not stop the rest,
    but makes the exit status 1. A root kept for copies of its mounts in
    other namespaces is a success with ``"finished": false``."""
    from rootfs_core.errors import RootFSError

    rfs = open_rootfs(args)
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
    emit(args, results[0] if len(results) == 1 else results, "")
    return 1 if any("error" in r for r in results) else 0


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, two spaces apart; the last one
    (a path, often long) is not padded."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in (header, *rows)
    )


def _instance_json(i: Instance) -> dict[str, Any]:
    return {
        "id": i.id,
        "root": i.root,
        "backend": i.backend,
        "prototype": i.prototype,
        "state": i.state,
        "created": i.created,
        "created_at": created_at(i.created),
        "options": i.options,
        "layers": i.layers,
        "read_only": i.read_only,
    }


def _cmd_list(args: argparse.Namespace) -> None:
    instances = open_rootfs(args).instances()
    backend = getattr(args, "backend", None)  # the command line's only: a filter here
    if backend is not None:
        instances = [i for i in instances if i.backend == backend]
    if args.state is not None:
        instances = [i for i in instances if i.state == args.state]
    if args.prototype is not None:
        wanted = {args.prototype, os.path.realpath(args.prototype)}
        instances = [i for i in instances if i.prototype in wanted]
    if args.quiet:
        if instances:
            print("\n".join(i.id for i in instances))
        return
    now = time.time()
    rows = []
    for i in instances:
        prototype = i.prototype + (f" (+{len(i.layers) - 1} layers)" if len(i.layers) > 1 else "")
        shown_age = age(now - i.created) if i.created else "-"
        rows.append([i.id, i.state, i.backend or "?", shown_age, i.root, prototype])
    header = ["ID", "STATE", "BACKEND", "AGE", "ROOT", "PROTOTYPE"]
    # Nothing at all when there is nothing (as before the header existed).
    emit(args, [_instance_json(i) for i in instances], _table(header, rows) if rows else "")


def _cmd_inspect(args: argparse.Namespace) -> None:
    """The instance as ``list`` shows it, and what only its record knows:
    the mounts it consists of (from its journal), each with whether it is
    mounted now, and the FUSE daemons behind them; its usage."""
    from rootfs_core.errors import ErrorId, RootFSError
    from rootfs_core.store import Store
    from rootfs_core.teardown import process_start

    rfs = open_rootfs(args)
    instance = rfs.instance(args.root)
    record = Store(rfs.base_dir).read(instance.id) if instance is not None else None
    if instance is None or record is None:
        raise RootFSError(
            ErrorId.ErrNoSuchRoot,
            f"no instance {args.root!r} in {rfs.base_dir} (never generated, or removed already)",
        )
    from rootfs_core.mounttable import filesystems

    try:
        table = filesystems()
    except OSError:
        table = {}
    daemons = {step.path: step.detail for step in record.steps if step.op == "daemon"}
    mounts: list[dict[str, Any]] = []
    for step in record.steps:
        if step.op not in ("mount", "fuse-mount"):
            continue
        try:
            mounted = rfs.syscalls.is_mountpoint(step.path)
        except OSError:
            mounted = False
        mount: dict[str, Any] = {
            "path": step.path,
            "kind": step.op,
            "mounted": mounted,
            "fstype": table.get(step.path) if mounted else None,
        }
        if step.op == "fuse-mount":
            pid, _, start = daemons.get(step.path, "").partition(":")
            mount["daemon"] = (
                {"pid": int(pid), "running": process_start(int(pid)) == start} if pid.isdigit() else None
            )
        mounts.append(mount)
    usage = None
    try:
        found = rfs.usage(instance.id)
        usage = {"bytes": found.bytes, "inodes": found.inodes}
    except (RootFSError, OSError):
        pass
    data = {**_instance_json(instance), "mounts": mounts, "usage": usage}

    created = created_at(instance.created)
    lines = [
        f"id          {instance.id}",
        f"root        {instance.root}",
        f"state       {instance.state}",
        f"backend     {instance.backend or '?'}",
        f"prototype   {instance.prototype or '?'}",
    ]
    lines += [f"layer       {layer}" for layer in instance.layers[1:]]
    lines += [
        f"read-only   {'yes' if instance.read_only else 'no'}",
        "options     " + (" ".join(f"{k}={v}" for k, v in sorted(instance.options.items())) or "-"),
        f"created     {created} ({age(time.time() - instance.created)} ago)" if created else "created     ?",
    ]
    if usage is not None:
        from rootfs_core.progress import human

        lines.append(f"usage       {human(usage['bytes'])} in {usage['inodes']} inodes")
    lines.append("mounts" + ("" if mounts else "      none"))
    for mount in mounts:
        state = "mounted" if mount["mounted"] else "unmounted"
        kind = mount["fstype"] or mount["kind"]
        daemon = mount.get("daemon")
        extra = f"  (daemon {daemon['pid']}{'' if daemon['running'] else ', gone'})" if daemon else ""
        lines.append(f"  {state:<9}  {kind:<10}  {mount['path']}{extra}")
    emit(args, data, "\n".join(lines))


def _without_probe_paths(text: str, base: str) -> str:
    """``text`` with the paths of throw-away probe instances (``BASE/ID/...``,
    a new ID for each probe) shortened to ``<probe>/...``: they no longer
    exist when the reason is read, and only make it longer."""
    import re

    return re.sub(re.escape(base.rstrip("/")) + r"/[0-9a-f]{12}(?![0-9a-f])", "<probe>", text)


def _cmd_backends(args: argparse.Namespace) -> None:
    """The JSON keys are ``BackendStatus``'s fields, with the same names and
    values, plus the installed ``distribution`` and ``entry_point`` (the
    same as ``target``, under its first name)."""
    import dataclasses

    from rootfs_core.registry import distributions_by_backend

    rfs = open_rootfs(args)
    statuses = rfs.backends()
    distributions = distributions_by_backend()
    rows = []
    for status in statuses:
        row = dataclasses.asdict(status)
        if row["reason"] is not None:
            row["reason"] = _without_probe_paths(row["reason"], rfs.base_dir)
        rows.append({**row, "distribution": distributions.get(status.name), "entry_point": status.target})
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
    emit(args, rows, "\n".join(lines))


def _cmd_completion(args: argparse.Namespace) -> int:
    """Print a completion script, or (for the scripts) what completes now:
    the ids of the instances in the base directory, the installed backends.
    Those lookups print nothing rather than fail, and never create, sweep or
    probe anything."""
    if args.list_ids:
        _print_ids(args)
        return 0
    if args.list_backends:
        from rootfs_core.registry import distributions_by_backend

        names = sorted(distributions_by_backend())
        if names:
            print("\n".join(names))
        return 0
    if args.shell is None:
        raise UsageError("which shell? rootfs completion bash|zsh")
    print(_completion_script(args.shell), end="")
    return 0


def _print_ids(args: argparse.Namespace) -> None:
    from rootfs_core.core import RootFS
    from rootfs_core.errors import RootFSError
    from rootfs_core.selection import load_config

    try:
        base = (
            getattr(args, "base_dir", None)
            or os.environ.get("ROOTFS_BASE_DIR")
            or load_config().get("base_dir")
            or DEFAULT_BASE_DIR
        )
        if not os.path.isdir(base):
            return
        ids = [i.id for i in RootFS(base, sweep=False).instances()]
    except (RootFSError, OSError):
        return
    if ids:
        print("\n".join(ids))


def _completion_script(shell: str) -> str:
    """The script, from the parser itself, so it knows every command and option."""
    parser = _parser()
    commands: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            commands = dict(action.choices)

    def options(p: argparse.ArgumentParser) -> list[str]:
        return sorted(o for a in p._actions if a.help != argparse.SUPPRESS for o in a.option_strings)

    valued = sorted(
        {
            o
            for p in (parser, *commands.values())
            for a in p._actions
            if a.nargs != 0 and a.option_strings
            for o in a.option_strings
        }
    )
    per_command = {name: " ".join(options(p)) for name, p in commands.items()}
    names = " ".join(commands)
    if shell == "bash":
        cases = "\n".join(f'            {name}) words="{opts}" ;;' for name, opts in per_command.items())
        return _BASH.format(
            commands=names,
            globals=" ".join(options(parser)),
            valued="|".join(valued),
            cases=cases,
            states=" ".join(_states()),
        )
    cases = "\n".join(f"        {name}) compadd -- {opts} ;;" for name, opts in per_command.items())
    return _ZSH.format(
        commands=names,
        globals=" ".join(options(parser)),
        valued="|".join(valued),
        cases=cases,
        states=" ".join(_states()),
    )


_BASH = """\
# bash completion for rootfs: commands, options, and the ids of instances.
# Load it with: source <(rootfs completion bash)
# or install it: rootfs completion bash > /etc/bash_completion.d/rootfs
_rootfs_complete() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" prev="${{COMP_WORDS[COMP_CWORD-1]}}"
    local cmd="" word words i
    local -a base=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        case "$word" in
            --base-dir) base=(--base-dir "${{COMP_WORDS[i+1]}}"); ((i++)) ;;
            --base-dir=*) base=("$word") ;;
            {valued}) ((i++)) ;;
            -*) ;;
            *) [[ -z "$cmd" ]] && cmd="$word" ;;
        esac
    done
    case "$prev" in
        --base-dir|--prototype) compopt -o filenames; COMPREPLY=($(compgen -d -- "$cur")); return ;;
        --backend)
            words="$("${{COMP_WORDS[0]}}" completion --list-backends 2>/dev/null)"
            COMPREPLY=($(compgen -W "$words" -- "$cur")); return ;;
        --state) COMPREPLY=($(compgen -W "{states}" -- "$cur")); return ;;
        {valued}) return ;;
    esac
    if [[ -z "$cmd" ]]; then
        if [[ "$cur" == -* ]]; then words="{globals}"; else words="{commands}"; fi
        COMPREPLY=($(compgen -W "$words" -- "$cur")); return
    fi
    if [[ "$cur" == -* ]]; then
        case "$cmd" in
{cases}
            *) words="" ;;
        esac
        COMPREPLY=($(compgen -W "$words" -- "$cur")); return
    fi
    case "$cmd" in
        remove|inspect|usage)
            words="$("${{COMP_WORDS[0]}}" "${{base[@]}}" completion --list-ids 2>/dev/null)"
            COMPREPLY=($(compgen -W "$words" -- "$cur")) ;;
        generate|sample) compopt -o filenames; COMPREPLY=($(compgen -d -- "$cur")) ;;
        completion) COMPREPLY=($(compgen -W "bash zsh" -- "$cur")) ;;
        unit) COMPREPLY=($(compgen -W "gc" -- "$cur")) ;;
    esac
}}
complete -F _rootfs_complete rootfs
"""

_ZSH = """\
#compdef rootfs
# zsh completion for rootfs: commands, options, and the ids of instances.
# Load it with: source <(rootfs completion zsh)   (after compinit)
# or install it as _rootfs in a directory of $fpath:
#   rootfs completion zsh > "${{fpath[1]}}/_rootfs"
_rootfs() {{
    local cmd="" word prev="${{words[CURRENT-1]}}" i
    local -a base found
    for ((i = 2; i < CURRENT; i++)); do
        word="${{words[i]}}"
        case "$word" in
            --base-dir) base=(--base-dir "${{words[i+1]}}"); ((i++)) ;;
            --base-dir=*) base=("$word") ;;
            ({valued}) ((i++)) ;;
            -*) ;;
            *) [[ -z "$cmd" ]] && cmd="$word" ;;
        esac
    done
    case "$prev" in
        --base-dir|--prototype) _files -/; return ;;
        --backend)
            found=(${{(f)"$(${{words[1]}} completion --list-backends 2>/dev/null)"}})
            compadd -a found; return ;;
        --state) compadd -- {states}; return ;;
        ({valued}) return ;;
    esac
    if [[ -z "$cmd" ]]; then
        if [[ "$PREFIX" == -* ]]; then compadd -- {globals}; else compadd -- {commands}; fi
        return
    fi
    if [[ "$PREFIX" == -* ]]; then
        case "$cmd" in
{cases}
        esac
        return
    fi
    case "$cmd" in
        remove|inspect|usage)
            found=(${{(f)"$(${{words[1]}} $base completion --list-ids 2>/dev/null)"}})
            compadd -a found ;;
        generate|sample) _files -/ ;;
        completion) compadd -- bash zsh ;;
        unit) compadd -- gc ;;
    esac
}}
if [[ "${{zsh_eval_context[-1]}}" == loadautofunc ]]; then
    _rootfs "$@"
else
    compdef _rootfs rootfs
fi
"""


def _cmd_unit(args: argparse.Namespace) -> None:
    """The shipped unit, its command made the absolute one of this
    installation (systemd looks for a bare name only in /usr/local/bin,
    /usr/bin and the like, where a virtualenv's ``rootfs`` is not), and
    its base directory the one of ``--base-dir`` if given there."""
    import re
    from importlib.resources import files

    text = files("rootfs_core").joinpath("data", f"rootfs-{args.name}.service").read_text(encoding="utf-8")
    base = getattr(args, "base_dir", None)
    if base is not None:
        base = os.path.normpath(os.path.abspath(base))
        if not re.fullmatch(r"[A-Za-z0-9/._+-]+", base):
            raise UsageError(f"a unit's base directory must be a plain path, not {base!r}")
        text = text.replace(DEFAULT_BASE_DIR, base)
    print(text.replace("ExecStart=rootfs ", f"ExecStart={_this_command()} ", 1), end="")


def _this_command() -> str:
    """How systemd can run this very installation's ``rootfs``."""
    import shlex
    import sysconfig

    script = os.path.join(sysconfig.get_path("scripts"), "rootfs")
    if os.access(script, os.X_OK):
        return shlex.quote(script)
    return f"{shlex.quote(sys.executable)} -m rootfs_core"


def _cmd_gc(args: argparse.Namespace) -> int:
    report = open_rootfs(args, sweep=False).gc(dry_run=args.dry_run)
    verb = "would clean up" if args.dry_run else "cleaned up"
    lines = [f"{verb} incomplete instance {i}" for i in report.instances]
    lines += [f"{verb} unexplained mount {p}" for p in report.unmounted]
    lines += [f"{verb} orphan directory {p}" for p in report.orphans]
    lines += [f"kept {i}: copies of its mounts live on in other mount namespaces" for i in report.waiting]
    for what, why in report.failed.items():
        print(f"rootfs: {why} (while cleaning up {what})", file=sys.stderr)
    data = {
        "dry_run": args.dry_run,
        "instances": report.instances,
        "unmounted": report.unmounted,
        "orphans": report.orphans,
        "waiting": report.waiting,
        "failed": report.failed,
    }
    emit(args, data, "\n".join(lines) or ("" if report.failed else "nothing to clean up"))
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

    report = run_demo(open_rootfs(args), quiet=args.json)
    emit(args, report, "")


def _error_json(exc: RootFSError) -> dict[str, str]:
    """``{"error": id, "message": ...}``: the message is the stderr line's
    text after the id (with the cause and any clean-up errors)."""
    text = str(exc)
    prefix = f"{exc.error_id.name}: "
    return {"error": exc.error_id.name, "message": text[len(prefix) :] if text.startswith(prefix) else text}


def _explained(exc: RootFSError, args: argparse.Namespace) -> tuple[dict[str, str], str]:
    """The JSON of a failure, and its text for stderr (after the id).

    ``ErrNoSupportedBackend`` gets one line per backend with its reason,
    wrapped at 80 columns, and the reasons of probes (there and in
    ``ErrBackendUnsupported``) lose the paths of their throw-away instances.
    """
    from rootfs_core.errors import ErrorId

    data = _error_json(exc)
    rfs = getattr(args, "opened", None)
    if rfs is None or exc.error_id not in (ErrorId.ErrNoSupportedBackend, ErrorId.ErrBackendUnsupported):
        return data, data["message"]
    message = _without_probe_paths(data["message"], rfs.base_dir)
    reasons = _reasons_by_backend(message, list(rfs._get_registry().backends))
    if reasons is None:
        return {**data, "message": message}, message
    import textwrap

    head = "no installed backend works here:"
    lines = [f"{name}: {reason}" for name, reason in reasons]
    shown = [
        textwrap.fill(
            line,
            width=80,
            initial_indent="  ",
            subsequent_indent="      ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        for line in lines
    ]
    one_per_line = "\n".join([head, *(f"  {line}" for line in lines)])  # unwrapped, for scripts
    return {**data, "message": one_per_line}, "\n".join([head, *shown])


def _reasons_by_backend(message: str, names: list[str]) -> list[tuple[str, str]] | None:
    """``[(backend, reason)]`` from the core's ``no supported backend (A:
    why; B: why)``, split only where a known backend's name follows (a
    reason may hold "; " itself); None if the message is not of that form."""
    import re

    found = re.fullmatch(r"no supported backend \((.*)\)", message, re.DOTALL)
    if found is None or not names:
        return None
    alternatives = "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
    parts = re.split(rf"; (?=(?:{alternatives}): )", found.group(1))
    reasons = []
    for part in parts:
        name = next((n for n in sorted(names, key=len, reverse=True) if part.startswith(f"{n}: ")), None)
        if name is None:
            return None
        reasons.append((name, part[len(name) + 2 :]))
    return reasons


_COMMANDS: dict[str, Callable[[argparse.Namespace], int | None]] = {
    "generate": _cmd_generate,
    "usage": _cmd_usage,
    "mount": _cmd_mount,
    "remove": _cmd_remove,
    "list": _cmd_list,
    "backends": _cmd_backends,
    "gc": _cmd_gc,
    "sample": _cmd_sample,
    "demo": _cmd_demo,
    "inspect": _cmd_inspect,
    "completion": _cmd_completion,
    "unit": _cmd_unit,
}


def _command(name: str) -> Callable[[argparse.Namespace], int | None]:
    from rootfs_core import cli_layers

    return _COMMANDS.get(name) or cli_layers.COMMANDS[name]


def main(argv: Sequence[str] | None = None) -> int:
    # Paths are bytes to the kernel and may not be UTF-8: print them as they
    # are whatever the locale, as Python itself does under C.UTF-8.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="surrogateescape")
    words = sys.argv[1:] if argv is None else argv
    parser = _parser(_command_named(words))
    args = parser.parse_args(words)
    log.route_to(_log_writer(bool(getattr(args, "verbose", False))))
    try:
        return _run(parser, args)
    finally:
        # main() may be called again in the same process (an embedding
        # program, a test): messages go back to ``logging`` in between.
        log.route_to(None)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the command; turn expected errors into their exit status."""
    from rootfs_core.errors import RootFSError

    try:
        try:
            status = _command(args.command)(args)
        finally:
            display = getattr(args, "display", None)
            if display is not None:
                display.close()  # a copy's progress line, before any message
    except UsageError as exc:
        parser.error(str(exc))
    except RootFSError as exc:
        data, shown = _explained(exc, args)
        if getattr(args, "json", False):
            # Scripts that asked for JSON get their failure as JSON too, on
            # stdout, one line; people still get the line on stderr.
            print(json.dumps(data))
        print(f"rootfs: {exc.error_id.name}: {shown}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rootfs: interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
