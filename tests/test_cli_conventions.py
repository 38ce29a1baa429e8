"""The ``rootfs`` command's conventions for scripts, through the real command
(``python -m rootfs_core``): failures as JSON with ``--json``, empty
arguments refused instead of silently replaced by defaults, ``--version``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version
from importlib.resources import files
from pathlib import Path

import pytest


def rootfs(
    *args: str, base_dir: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "rootfs_core"]
    if base_dir is not None:
        argv += ["--base-dir", base_dir]
    # cwd="/" so "python -m" imports the installed rootfs_core, not this checkout
    return subprocess.run(
        [*argv, *args], capture_output=True, text=True, check=False, timeout=120, cwd="/", env=env
    )


@pytest.fixture
def cli_env(discovery_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The in-test backends installed; nothing forced by this environment."""
    monkeypatch.delenv("ROOTFS_BACKEND", raising=False)
    monkeypatch.delenv("ROOTFS_BASE_DIR", raising=False)
    monkeypatch.setenv("ROOTFS_CONFIG", "/nonexistent/config.toml")


@pytest.mark.parametrize(
    ("args", "error_id"),
    [
        (["remove", "/etc", "--json"], "ErrNotOurRoot"),
        (["--backend", "bindtest", "generate", "/nonexistent", "--json"], "ErrPrototypeMissing"),
        (["--backend", "nonexistent", "generate", "PROTO", "--json"], "ErrUnknownBackend"),
        (["--backend", "refuses", "generate", "PROTO", "--json"], "ErrBackendUnsupported"),
    ],
)
def test_json_failures_are_json_on_stdout_and_a_line_on_stderr(
    cli_env: None, base_dir: str, prototype: str, args: list[str], error_id: str
) -> None:
    out = rootfs(*[a.replace("PROTO", prototype) for a in args], base_dir=base_dir)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stdout.count("\n") == 1 and out.stdout.endswith("\n")  # one line
    data = json.loads(out.stdout)
    assert set(data) == {"error", "message"}
    assert data["error"] == error_id and data["message"]
    assert out.stderr == f"rootfs: {error_id}: {data['message']}\n"
    assert "Traceback" not in out.stderr


def test_constructor_errors_are_json_too(cli_env: None) -> None:
    out = rootfs("gc", "--dry-run", "--json", base_dir="/nonexistent/base")
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"] == "ErrRwBaseDirMissing"
    assert out.stderr.startswith("rootfs: ErrRwBaseDirMissing: ")


def test_without_json_a_failure_prints_nothing_on_stdout(cli_env: None, base_dir: str) -> None:
    out = rootfs("remove", "/etc", base_dir=base_dir)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("rootfs: ErrNotOurRoot: ")


def test_usage_errors_stay_human_with_json(cli_env: None, base_dir: str) -> None:
    out = rootfs("generate", "--bogus", "--json", base_dir=base_dir)
    assert out.returncode == 2 and out.stdout == ""
    assert "usage:" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["--base-dir", "BASE", "generate", ""], "argument LAYER"),
        (["--base-dir", "BASE", "generate", "", "--json"], "argument LAYER"),
        (["--base-dir", "", "list"], "argument --base-dir"),
        (["list", "--base-dir", ""], "argument --base-dir"),
        (["--base-dir", "BASE", "--backend", "", "generate", "PROTO"], "argument --backend"),
        (["--base-dir", "BASE", "generate", "PROTO", "--backend", ""], "argument --backend"),
        (["--base-dir", "BASE", "remove", ""], "argument ROOT_OR_ID"),
        (["--base-dir", "BASE", "sample", ""], "argument directory"),
    ],
)
def test_empty_arguments_are_usage_errors(
    cli_env: None, base_dir: str, prototype: str, args: list[str], what: str
) -> None:
    """Not the sample prototype, the default base directory or the configured
    backend in their place: nothing is done at all."""
    out = rootfs(*[a.replace("BASE", base_dir).replace("PROTO", prototype) for a in args])
    assert out.returncode == 2, out.stdout + out.stderr
    assert out.stdout == ""
    assert "usage:" in out.stderr and f"{what}: must not be empty" in out.stderr
    assert os.listdir(base_dir) == []  # not even opened


def test_empty_environment_variables_count_as_unset(
    cli_env: None, base_dir: str, prototype: str, tmp_path: Path
) -> None:
    """ROOTFS_BASE_DIR="" and ROOTFS_BACKEND="" fall through to the
    configuration file, as if they were not set."""
    config = tmp_path / "config.toml"
    config.write_text(f'base_dir = "{base_dir}"\nbackend = "bindtest"\n')
    env = dict(os.environ, ROOTFS_CONFIG=str(config), ROOTFS_BASE_DIR="", ROOTFS_BACKEND="")
    gen = rootfs("generate", prototype, "--json", env=env)
    assert gen.returncode == 0, gen.stderr
    data = json.loads(gen.stdout)
    assert data["backend"] == "bindtest"
    assert data["root"].startswith(base_dir + "/")
    removed = rootfs("remove", data["id"], "--json", env=env)
    assert removed.returncode == 0, removed.stderr


def test_version_names_the_core_and_every_backend(cli_env: None) -> None:
    out = rootfs("--version")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"rootfs-core {version('rootfs-core')}"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:]}
    assert lines[1] == "backends:"
    assert rows["bindtest"] == ["rootfs-testbackends", "0.0.0"]
    assert rows["import-fails"] == ["rootfs-testbackends", "0.0.0"]  # listed even if broken
    assert out.stderr == ""


def test_version_reads_metadata_only_when_asked() -> None:
    probe = (
        "import sys\n"
        "before = 'importlib.metadata' in sys.modules\n"
        "import rootfs_core\n"
        "assert ('importlib.metadata' in sys.modules) == before, 'import rootfs_core read metadata'\n"
        "print(rootfs_core.__version__)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False, timeout=60, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == version("rootfs-core") + "\n"


def test_python_dash_m_rootfs_core_is_the_command(cli_env: None, base_dir: str) -> None:
    helped = rootfs("--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: rootfs ")
    listed = rootfs("list", "--json", base_dir=base_dir)
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    assert rootfs("frobnicate").returncode == 2


def test_the_package_says_it_is_typed() -> None:
    assert files("rootfs_core").joinpath("py.typed").is_file()
