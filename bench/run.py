"""rootfs benchmark: the library's cost as ratios to the physical limit.

    python bench/run.py            # full run (a few minutes; debootstrap if installed)
    python bench/run.py --quick    # short run, for CI as a smoke test
    python bench/run.py --json     # results as JSON on stdout (the table goes to stderr)
    python bench/run.py --only 3,7 # some items only

This file is the driver: its options, the settings they choose, running
the items asked for, and the table, Markdown and JSON of what they found.
Each numbered item is a module of ``bench/items`` (the ITEMS table below
says which); what they share (settings, results, timing) is ``measure``,
the raw baselines ``rawops``, the peers ``peer_clis``, the clean-up
``hygiene``. Nothing here asserts a time; the exit status says only
whether the run worked and cleaned up after itself (0), failed while
measuring (1), or left something behind (3).

Everything is made under /tmp/rootfs-bench-<pid>/: roots are removed with the
library (or the baseline's own unmount), and at the end the mount table is
checked, leftovers are unmounted by path, and the directory is deleted only
once nothing is mounted below it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict

import hygiene
import prototypes
from items import cli, overlay, peers, quilt, scale, size, throughput
from measure import Bench, Results, Settings, log, settle

from rootfs_core import mounttable

EXIT_OK, EXIT_FAILED, EXIT_LEFTOVERS = 0, 1, 3

# The items in the order they run, each with the numbers of the table's
# lines it makes: --only runs those whose numbers it names.
ITEMS: tuple[tuple[frozenset[str], Callable[[Bench], None]], ...] = (
    (frozenset({"1"}), overlay.run),  # overlayfs generate+remove, library / raw
    (frozenset({"1", "2"}), quilt.run),  # quilt generate+remove; its generate / cp -a + binds
    (frozenset({"3"}), cli.run),  # the command line per call / python -c pass
    (frozenset({"4"}), scale.run),  # per op with N live instances
    (frozenset({"5"}), size.run),  # Debian-sized / busybox prototype
    (frozenset({"6"}), throughput.run),  # instances per second, 1, 2 and 4 processes
    (frozenset({"7"}), peers.run),  # the CLI pair / ctr, podman, buildah
)
NUMBERS = frozenset().union(*(numbers for numbers, _ in ITEMS))


def code_version() -> str:
    """The commit of the rootfs_core being measured, and whether its tree had
    local changes (an editable install measures the working tree as it is)."""
    import rootfs_core

    where = os.path.dirname(os.path.dirname(os.path.abspath(rootfs_core.__file__)))

    def git(*argv: str) -> str:
        proc = subprocess.run(["git", "-C", where, *argv], capture_output=True, text=True, check=False)
        return proc.stdout.strip() if proc.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return f"{where} (not a git checkout)"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "rootfs_core", "plugins")
    return f"{where} at {commit}" + (" with local changes" if dirty else "")


def table(res: Results, markdown: bool = False) -> str:
    """The ratios as a text table (or a Markdown one for docs/performance.md),
    then the notes of what was skipped."""
    head = ("#", "ratio", "measured", "baseline", "ratio", "target", "", "detail")
    rows = [
        (
            r.item,
            r.name,
            r.numerator,
            r.denominator,
            f"{r.value:.2f}x",
            f"<= {r.target:.2f}x" if r.target is not None else "-",
            r.status,
            r.note,
        )
        for r in res.ratios
    ]
    notes = [f"note: {n}" for n in res.notes]
    if markdown:
        lines = ["| " + " | ".join(head[:6]) + " | status | detail |", "|" + "---|" * 8]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        if res.throughput:
            lines += ["", "| processes | library inst/s | raw inst/s | library / raw |", "|---|---|---|---|"]
            lines += [
                f"| {t['processes']:.0f} | {t['lib_per_s']:.0f} | {t['raw_per_s']:.0f} "
                f"| {t['lib_over_raw']:.2f} |"
                for t in res.throughput
            ]
        if res.notes:
            lines += ["", *(f"- {n}" for n in res.notes)]
        return "\n".join(lines) + "\n"
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows, strict=True)]
    widths[-1] = 0

    def fmt(row: tuple[str, ...]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()

    return "\n".join([fmt(head), *map(fmt, rows), *notes]) + "\n"


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM (a CI timeout) unwinds like Ctrl-C, so every finally runs."""

    def handler(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short run (CI smoke test)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    parser.add_argument("--plot", metavar="PNG", help="write the cost-vs-live-instances plot here")
    parser.add_argument("--markdown", metavar="FILE", help="write the results table as Markdown here")
    parser.add_argument("--debian", metavar="DIR", help="an existing Debian prototype to use for item 5")
    parser.add_argument("--no-debootstrap", action="store_true", help="synthesise the Debian-sized tree")
    parser.add_argument(
        "--only", metavar="ITEMS", help=f"comma-separated items to run ({','.join(sorted(NUMBERS))})"
    )
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("the benchmark mounts: run it as root")
    only = set(args.only.split(",")) if args.only else NUMBERS
    if only - NUMBERS:
        parser.error(
            f"no item {', '.join(sorted(only - NUMBERS))}: the items are {', '.join(sorted(NUMBERS))}"
        )
    s = Settings.make(args.quick, debootstrap=not args.no_debootstrap)

    work = f"/tmp/rootfs-bench-{os.getpid()}"
    res = Results(
        settings=asdict(s),
        machine={
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cpus": os.cpu_count() or 0,
            "work_dir": work,
            "mounts_at_start": len(mounttable.mount_points()),  # the host's too, for the record
            "load_at_start": os.getloadavg()[0],
            "code": code_version(),
        },
    )
    failed = False
    started = time.monotonic()
    with terminate_as_exit():
        try:
            os.mkdir(work, 0o700)
            # A probe cache of our own: warm after the first RootFS, and never
            # mixed with the host's /run/rootfs.
            warm_cache = f"{work}/probe-cache"
            os.environ["ROOTFS_CACHE"] = warm_cache
            os.environ.pop("ROOTFS_BACKEND", None)
            os.environ["ROOTFS_CONFIG"] = f"{work}/no-config.toml"  # absent, as on most hosts
            busybox = f"{work}/proto-busybox"
            res.prototypes["busybox"] = prototypes.busybox(busybox)
            bench = Bench(s, res, work, busybox, warm_cache, args.debian)
            for numbers, run in ITEMS:
                if numbers & only:
                    settle()
                    run(bench)
        except BaseException as exc:
            failed = True
            res.errors.append(f"{type(exc).__name__}: {exc}")
            log(f"FAILED: {type(exc).__name__}: {exc}")
            if not isinstance(exc, Exception):
                log("interrupted: cleaning up")
        finally:
            res.cleanup, errors = hygiene.clean_up(work)
            res.errors += errors
    res.machine["seconds"] = round(time.monotonic() - started, 1)
    res.machine["mounts_at_end"] = len(mounttable.mount_points())
    res.machine["load_at_end"] = os.getloadavg()[0]

    print(table(res), file=sys.stderr if args.json else sys.stdout, end="")
    if args.markdown and res.ratios:
        with open(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(table(res, markdown=True))
    if args.plot and res.scale:
        done = scale.plot(res, args.plot)
        log(f"plot written to {done}" if done else "matplotlib is not installed: no plot")
    if args.json:
        print(json.dumps(res.as_json(), indent=1))
    clean = bool(res.cleanup["ok"])
    log(f"{res.machine['seconds']} s; cleanup {'ok' if clean else 'FAILED: ' + json.dumps(res.cleanup)}")
    if not clean:
        return EXIT_LEFTOVERS
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    os.umask(0o022)  # the raw baselines rely on mkdir modes as the library sets them
    sys.exit(main())
