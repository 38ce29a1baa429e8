"""``python -m rootfs_core.testing NAME [-o KEY=VALUE]... [-- PYTEST ARGS]``

Runs the conformance suite against the installed backend NAME, without
writing any code: once on real mounts (skipped, with the probe's reason,
where the backend is unsupported) and once on simulated mounts. Exits with
pytest's status: 0 when everything that could run passed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

TEMPLATE = """\
from rootfs_core.testing.conformance import BackendConformance


class TestRealMounts(BackendConformance):
    backend = {name!r}
    options = {options!r}


class TestSimulatedMounts(BackendConformance):
    backend = {name!r}
    options = {options!r}
    real_mounts = False
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rootfs_core.testing", description="Run the rootfs backend conformance suite."
    )
    parser.add_argument("backend", help="name of an installed backend (see `rootfs backends`)")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("pytest_args", nargs=argparse.REMAINDER, help="passed on to pytest (after --)")
    args = parser.parse_args(argv)
    options = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"option {item!r} is not KEY=VALUE")
        options[key] = value
    extra = [a for a in args.pytest_args if a != "--"]

    import pytest

    with tempfile.TemporaryDirectory(prefix="rootfs-conformance-") as holder:
        path = os.path.join(holder, "test_conformance.py")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(TEMPLATE.format(name=args.backend, options=options))
        quiet = ["-W", "ignore::pytest.PytestAssertRewriteWarning"]  # rootfs_core is imported already
        # The fixtures are an opt-in plugin (no pytest11 entry point), and no
        # configuration file applies under a temporary rootdir: load it here.
        plugin = ["-p", "rootfs_core.testing.fixtures"]
        return int(
            pytest.main([path, "-p", "no:cacheprovider", *plugin, "-rs", "--rootdir", holder, *quiet, *extra])
        )


if __name__ == "__main__":
    sys.exit(main())
