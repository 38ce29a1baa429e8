"""The systemd unit that runs ``rootfs gc`` at boot: shipped in the package,
printed by ``rootfs unit gc`` with this installation's command, and valid
(``systemd-analyze verify`` where it is installed; parsed in any case)."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from rootfs_core.cli import _parser

SHIPPED = files("rootfs_core").joinpath("data", "rootfs-gc.service")


def _unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(text)
    return parser


def _printed() -> str:
    out = subprocess.run(
        [sys.executable, "-m", "rootfs_core", "unit", "gc"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd="/",
    )
    assert out.returncode == 0 and out.stderr == "", out.stderr
    return out.stdout


def test_the_shipped_unit_runs_gc_on_the_default_base_dir_when_rootfs_was_used() -> None:
    assert SHIPPED.is_file()
    unit = _unit(SHIPPED.read_text(encoding="utf-8"))
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    # a machine that never used rootfs has no state directory: the unit is skipped, not failed
    assert unit["Unit"]["ConditionPathIsDirectory"] == "/var/lib/rootfs/.rootfs"
    assert unit["Unit"]["RequiresMountsFor"] == "/var/lib/rootfs"
    assert unit["Service"]["Type"] == "oneshot"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    program, *args = shlex.split(unit["Service"]["ExecStart"])
    assert program == "rootfs"  # found by systemd in /usr/local/bin, /usr/bin, ...
    parsed = _parser().parse_args(args)  # the real command's parser accepts it
    assert parsed.command == "gc" and parsed.base_dir == "/var/lib/rootfs" and not parsed.dry_run


def test_rootfs_unit_gc_prints_it_with_this_installations_command() -> None:
    printed = _printed()
    shipped = SHIPPED.read_text(encoding="utf-8")
    command = shlex.split(_unit(printed)["Service"]["ExecStart"])
    assert command[-3:] == ["--base-dir", "/var/lib/rootfs", "gc"]
    program = command[:-3]
    assert os.path.isabs(program[0]) and os.access(program[0], os.X_OK)
    assert program == [program[0]] or program[1:] == ["-m", "rootfs_core"]
    # the rest is the shipped file, word for word
    assert printed.replace(shlex.join(program), "rootfs", 1) == shipped


def test_the_printed_command_runs_gc(base_dir: str) -> None:
    """The very command of the unit, on a base directory of the test's."""
    command = shlex.split(_unit(_printed())["Service"]["ExecStart"])
    command[command.index("--base-dir") + 1] = base_dir
    env = dict(os.environ, ROOTFS_CONFIG="/nonexistent/config.toml")
    out = subprocess.run(command, capture_output=True, text=True, check=False, timeout=120, env=env, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "nothing to clean up\n"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_systemd_analyze_verify_accepts_the_printed_unit(tmp_path: Path) -> None:
    path = tmp_path / "rootfs-gc.service"
    path.write_text(_printed())
    out = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, check=False, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "rootfs-gc.service" not in out.stderr  # no complaint about the unit itself


def test_a_unit_for_another_base_dir() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rootfs_core", "--base-dir", "/srv/roots", "unit", "gc"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    unit = _unit(out.stdout)
    assert unit["Unit"]["ConditionPathIsDirectory"] == "/srv/roots/.rootfs"
    assert shlex.split(unit["Service"]["ExecStart"])[-3:] == ["--base-dir", "/srv/roots", "gc"]
    assert "/var/lib/rootfs" not in out.stdout
    odd = subprocess.run(
        [sys.executable, "-m", "rootfs_core", "--base-dir", "/srv/my roots", "unit", "gc"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd="/",
    )
    assert odd.returncode == 2 and "plain path" in odd.stderr and odd.stdout == ""
