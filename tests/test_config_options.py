"""The configuration file's keys (docs/configuration.md): per-backend default
options (``[options.NAME]``) under the command line's, ``cache_dir``, the
precedence of command line, environment and file, and errors that name the
file and the key. Through the real command."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rootfs_core import ErrorId, RootFSError, selection

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def rootfs(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rootfs_core", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd="/",
        env=env,
    )


@pytest.fixture
def config(discovery_path: str, tmp_path: Path) -> Path:
    return tmp_path / "config.toml"


@pytest.fixture
def env(config: Path) -> dict[str, str]:
    """The in-test backends, this configuration file, nothing else forced."""
    found = dict(os.environ, ROOTFS_CONFIG=str(config))
    for name in ("ROOTFS_BACKEND", "ROOTFS_BASE_DIR"):
        found.pop(name, None)
    return found


def _generate(env: dict[str, str], base_dir: str, prototype: str, *extra: str) -> dict[str, object]:
    out = rootfs("--base-dir", base_dir, "generate", prototype, "--json", *extra, env=env)
    assert out.returncode == 0, out.stderr
    data: dict[str, object] = json.loads(out.stdout)
    removed = rootfs("--base-dir", base_dir, "remove", str(data["id"]), env=env)
    assert removed.returncode == 0, removed.stderr
    return data


def test_per_backend_defaults_apply_and_the_command_line_wins(
    env: dict[str, str], config: Path, base_dir: str, prototype: str
) -> None:
    config.write_text(
        'backend = "bindtest"\n'
        "[options.bindtest]\n"
        'tmp_size = "2M"\n'
        "[options.quilt]\n"  # for another backend: not looked at
        'dirs = "etc,var"\n'
        "[options.not-installed-anywhere]\n"
        'whatever = "x"\n'
    )
    assert _generate(env, base_dir, prototype)["options"] == {"tmp_size": "2M"}
    assert _generate(env, base_dir, prototype, "-o", "tmp_size=3M")["options"] == {"tmp_size": "3M"}
    # the file's backend or the command line's: the defaults follow the backend used
    forced = _generate(env, base_dir, prototype, "--backend", "bindtest")
    assert forced["options"] == {"tmp_size": "2M"}


def test_an_option_the_backend_does_not_have_names_the_key_and_the_file(
    env: dict[str, str], config: Path, base_dir: str, prototype: str
) -> None:
    config.write_text('[options.bindtest]\ntmp_size = "2M"\nbogus = "1"\n')
    out = rootfs("--base-dir", base_dir, "--backend", "bindtest", "generate", prototype, env=env)
    assert out.returncode == 1
    assert out.stderr.startswith(f"rootfs: ErrConfig: {config}: options.bindtest.bogus: ")
    assert "(it accepts: tmp_size)" in out.stderr
    listed = rootfs("--base-dir", base_dir, "list", "-q", env=env)
    assert listed.returncode == 0 and listed.stdout == ""  # nothing was made


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('bakend = "bindtest"\n', "unknown setting(s) bakend"),
        ("[options.bindtest]\ntmp_size = 2\n", "setting(s) options.bindtest.tmp_size must be strings"),
        ('[options]\nbindtest = "tmp_size=2M"\n', "options.bindtest must be a table"),
        ('options = "tmp_size=2M"\n', "options must be tables"),
        ("cache_dir = false\n", "setting(s) cache_dir must be strings"),
        ("backend = [\n", "cannot read configuration"),
    ],
)
def test_errors_of_the_file_name_the_file_and_the_key(
    env: dict[str, str], config: Path, base_dir: str, text: str, named: str
) -> None:
    config.write_text(text)
    out = rootfs("--base-dir", base_dir, "list", "--json", env=env)
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"] == "ErrConfig"
    assert out.stderr.startswith("rootfs: ErrConfig: ")
    assert str(config) in out.stderr and named in out.stderr
    assert "Traceback" not in out.stderr


def test_cache_dir_under_the_environment(
    env: dict[str, str], config: Path, base_dir: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_file, from_env = tmp_path / "cache-of-the-file", tmp_path / "cache-of-the-environment"
    config.write_text(f'cache_dir = "{from_file}"\n')
    env.pop("ROOTFS_CACHE", None)
    assert rootfs("--base-dir", base_dir, "--backend", "bindtest", "backends", env=env).returncode == 0
    assert any(name.startswith("bindtest-") for name in os.listdir(from_file / "probes"))
    out = rootfs("--base-dir", base_dir, "backends", env=dict(env, ROOTFS_CACHE=str(from_env)))
    assert out.returncode == 0 and (from_env / "probes").is_dir()
    monkeypatch.setenv("ROOTFS_CONFIG", str(config))
    monkeypatch.delenv("ROOTFS_CACHE")
    assert selection.cache_dir("probes") == str(from_file / "probes")
    config.write_text('cache_dir = ""\n')  # as ROOTFS_CACHE="": no cache at all
    assert selection.cache_dir("probes") is None
    monkeypatch.setenv("ROOTFS_CACHE", str(from_env))
    assert selection.cache_dir("probes") == str(from_env / "probes")


def test_precedence_command_line_environment_file_default(
    env: dict[str, str], config: Path, tmp_path: Path, prototype: str
) -> None:
    bases = {}
    for name in ("flag", "env", "file"):
        bases[name] = tmp_path / f"base-{name}"
        bases[name].mkdir(mode=0o700)
    config.write_text(f'base_dir = "{bases["file"]}"\nbackend = "crashy"\n')

    def where(*args: str, **extra: str) -> tuple[str, str]:
        out = rootfs(*args, "generate", prototype, "--json", env=dict(env, **extra))
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert rootfs(*args, "remove", data["id"], env=dict(env, **extra)).returncode == 0
        return os.path.dirname(os.path.dirname(data["root"])), data["backend"]

    flag = ["--base-dir", str(bases["flag"]), "--backend", "bindtest"]
    assert where(*flag, ROOTFS_BASE_DIR=str(bases["env"]), ROOTFS_BACKEND="crashy") == (
        str(bases["flag"]),
        "bindtest",
    )
    assert where(ROOTFS_BASE_DIR=str(bases["env"]), ROOTFS_BACKEND="bindtest") == (
        str(bases["env"]),
        "bindtest",
    )
    assert where() == (str(bases["file"]), "crashy")


def test_default_options_for_the_api(monkeypatch: pytest.MonkeyPatch, config: Path) -> None:
    """What the command merges, for a program that wants the same."""
    monkeypatch.setenv("ROOTFS_CONFIG", str(config))
    config.write_text('[options.quilt]\ndirs = "etc,var"\n')
    assert selection.default_options("quilt", ["dirs"]) == {"dirs": "etc,var"}
    assert selection.default_options("overlayfs", ["size"]) == {}
    with pytest.raises(RootFSError) as info:
        selection.default_options("quilt", ["size"])
    assert info.value.error_id is ErrorId.ErrConfig
    assert str(config) in str(info.value) and "options.quilt.dirs" in str(info.value)


def test_docs_name_every_key_and_the_precedence() -> None:
    text = DOCS.read_text()
    for key in sorted(selection._CONFIG_KEYS):
        assert re.search(rf"^#+ `{key}", text, re.MULTILINE), (
            f"docs/configuration.md lacks a section on {key}"
        )
    for variable in ("ROOTFS_CONFIG", "ROOTFS_BASE_DIR", "ROOTFS_BACKEND", "ROOTFS_CACHE"):
        assert variable in text
    assert "command line, then the environment, then the configuration file, then" in text
