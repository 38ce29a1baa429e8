"""``python -m rootfs_core.testing NAME [-o KEY=VALUE]... [--band BAND] [-- PYTEST ARGS]``:
what cannot run fails at once (exit 2, one line, no test session), options
after the name reach the backend, ``--band`` checks the priority against
the band claimed, pytest's arguments go after ``--``."""

from __future__ import annotations

import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROG = "python -m rootfs_core.testing"


@pytest.fixture(autouse=True)
def _in_test_backends(discovery_path: str) -> None:
    """bindtest, misspelt-hook and the others are found through real entry points."""


def _run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = (
        [sys.executable, "-m", "rootfs_core.testing", *args] if code is None else [sys.executable, "-c", code]
    )
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False, cwd="/")


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["no-such-backend"], "ErrUnknownBackend: no backend named 'no-such-backend' is installed"),
        (
            ["misspelt-hook"],
            "ErrUnknownBackend: backend 'misspelt-hook' is broken: unknown hook rootfs_remov",
        ),
        (["bindtest", "-o", "bogus=1"], "ErrBadOption: backend 'bindtest' does not accept option(s) bogus"),
    ],
)
def test_what_cannot_run_fails_at_once_with_one_line(args: list[str], said: str) -> None:
    started = time.monotonic()
    out = _run(*args)
    assert out.returncode == 2
    assert out.stdout == ""  # no test session at all
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"{PROG}: {said}"), out.stderr
    assert time.monotonic() - started < 30


def test_options_after_the_name_reach_the_backend() -> None:
    """bindtest mounts a tmpfs of ``tmp_size``: a size tmpfs refuses makes
    the one selected test fail, a good one passes (before, ``-o`` after the
    name went to pytest, as an ini override, and was silently ignored)."""
    one = ["--", "-q", "-k", "TestRealMounts and test_root_shows_the_prototype"]
    good = _run("bindtest", "-o", "tmp_size=3M", *one)
    assert good.returncode == 0, good.stdout[-3000:]
    assert "1 passed" in good.stdout
    bad = _run("bindtest", "-o", "tmp_size=not-a-size", *one)
    assert bad.returncode == 1, bad.stdout[-3000:]
    assert "1 failed" in bad.stdout and "ErrOverlayTempDir" in bad.stdout


@pytest.mark.parametrize(("band", "passes"), [("copy", True), ("kernel-union", False), (None, None)])
def test_band_checks_the_priority_bindtest_claims(band: str | None, passes: bool | None) -> None:
    """bindtest's priority is 120: in the copy band, not the kernel unions';
    without --band the check skips, saying how to ask for it."""
    one = ["--", "-q", "-rs", "-k", "TestSimulatedMounts and test_priority_is_in_the_band_it_claims"]
    out = _run("bindtest", *(["--band", band] if band else []), *one)
    shown = out.stdout[-2000:]
    if passes is None:
        assert out.returncode == 0 and "1 skipped" in out.stdout and "--band" in out.stdout, shown
    elif passes:
        assert out.returncode == 0 and "1 passed" in out.stdout, shown
    else:
        assert out.returncode == 1 and "priority 120 is outside its band 300..399" in out.stdout, shown


def test_an_unknown_band_fails_at_once() -> None:
    out = _run("bindtest", "--band", "fastest")
    assert out.returncode == 2 and out.stdout == ""
    assert "invalid choice: 'fastest'" in out.stderr


def test_pytest_arguments_go_after_the_double_dash() -> None:
    listed = _run("bindtest", "--", "--collect-only", "-q")
    assert listed.returncode == 0, listed.stdout[-3000:]
    assert "TestRealMounts::test_root_shows_the_prototype" in listed.stdout
    assert "passed" not in listed.stdout  # collected, not run
    stray = _run("bindtest", "-x")
    assert stray.returncode == 2 and "pytest's arguments go after --" in stray.stderr


def test_without_pytest_one_line_says_how_to_install_it() -> None:
    code = (
        "import sys\n"
        "sys.modules['pytest'] = None  # as if it were not installed\n"
        "from rootfs_core.testing.__main__ import main\n"
        "sys.exit(main(['bindtest']))\n"
    )
    out = _run(code=code)
    assert out.returncode == 2
    assert out.stdout == ""
    assert out.stderr == f"{PROG}: needs pytest: pip install 'rootfs-core[testing]'\n"


def test_the_testing_extra_is_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(req.startswith("pytest") for req in project["optional-dependencies"]["testing"])
