"""``python -m rootfs_core.testing NAME [-o KEY=VALUE]... [--band BAND] [-- PYTEST ARGS]``

Runs the conformance suite against the installed backend NAME, without
writing any code: once on real mounts (skipped, with the probe's reason,
where the backend is unsupported) and once on simulated mounts. Exits with
pytest's status: 0 when everything that could run passed; 2, before any
test runs, when NAME is not installed (or broken), an option is one it does
not accept, or pytest is missing (``pip install 'rootfs-core[testing]'``).
Everything before ``--`` is ours (``-o`` after NAME too); everything after
it is pytest's. ``--band`` names the priority band the backend claims
(``kernel-union``, ``other-union``, ``copy``, ``last-resort``: the
``hookspecs.BAND_*``), so that the suite checks its priority lies in it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

TEMPLATE = """\
from rootfs_core import hookspecs
from rootfs_core.testing.conformance import BackendConformance


class TestRealMounts(BackendConformance):
    backend = {name!r}
    options = {options!r}
    band = {band}


class TestSimulatedMounts(BackendConformance):
    backend = {name!r}
    options = {options!r}
    band = {band}
    real_mounts = False
"""

# --band's words, and the hookspecs constant each names.
BANDS = {
    "kernel-union": "BAND_KERNEL_UNION",
    "other-union": "BAND_OTHER_UNION",
    "copy": "BAND_COPY",
    "last-resort": "BAND_LAST_RESORT",
}


PROG = "python -m rootfs_core.testing"


def _parse(argv: list[str]) -> tuple[argparse.Namespace, dict[str, str], list[str]]:
    """Our arguments (everything before the first ``--``), the backend
    options among them, and pytest's (everything after it)."""
    if "--" in argv:
        cut = argv.index("--")
        ours, extra = argv[:cut], argv[cut + 1 :]
    else:
        ours, extra = argv, []
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the rootfs backend conformance suite against an installed backend.",
        epilog="Arguments after -- go to pytest, e.g. `-- -x -v`.",
    )
    parser.add_argument("backend", help="name of an installed backend (see `rootfs backends`)")
    parser.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a backend option, given to every generate of the suite (repeatable)",
    )
    parser.add_argument(
        "--band",
        choices=sorted(BANDS),
        help="the priority band the backend claims: its priority is checked to lie in it "
        "(unset, that check skips)",
    )
    args, unknown = parser.parse_known_args(ours)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (pytest's arguments go after --)")
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"option {item!r} is not KEY=VALUE")
        options[key] = value
    return args, options, extra


def _unusable(name: str, options: dict[str, str]) -> str | None:
    """Why the suite cannot run against backend ``name`` with ``options``
    (not installed, broken, an option it does not accept), or None."""
    from rootfs_core.errors import ErrorId, RootFSError
    from rootfs_core.registry import Registry

    try:
        backend = Registry.discover().get(name)
    except RootFSError as exc:
        return f"{exc}; install the distribution that provides it, in this environment, first"
    accepted = backend.info.options if backend.info else {}
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        hint = ", ".join(sorted(accepted)) or "none"
        return (
            f"{ErrorId.ErrBadOption.name}: backend {name!r} does not accept option(s) "
            f"{', '.join(unknown)} (it accepts: {hint})"
        )
    return None


def main(argv: list[str] | None = None) -> int:
    args, options, extra = _parse(list(sys.argv[1:] if argv is None else argv))
    try:
        import pytest
    except ImportError:
        print(f"{PROG}: needs pytest: pip install 'rootfs-core[testing]'", file=sys.stderr)
        return 2
    problem = _unusable(args.backend, options)
    if problem is not None:
        print(f"{PROG}: {problem}", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="rootfs-conformance-") as holder:
        path = os.path.join(holder, "test_conformance.py")
        with open(path, "w", encoding="utf-8") as fh:
            band = f"hookspecs.{BANDS[args.band]}" if args.band else "None"
            fh.write(TEMPLATE.format(name=args.backend, options=options, band=band))
        quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]  # rootfs_core is imported already
        # The fixtures are an opt-in plugin (no pytest11 entry point), and no
        # configuration file applies under a temporary rootdir: load it here.
        plugin = ["-p", "rootfs_core.testing.fixtures"]
        return int(
            pytest.main([path, "-p", "no:cacheprovider", *plugin, "-rs", "--rootdir", holder, *quiet, *extra])
        )


if __name__ == "__main__":
    sys.exit(main())
