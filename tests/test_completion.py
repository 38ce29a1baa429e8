"""``rootfs completion bash|zsh``: the scripts complete commands, options and
the ids of the instances of a base directory, by running the real command."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from rootfs_core.cli import _parser
from rootfs_core.core import RootFS
from rootfs_core.registry import Registry

# Every command the parser has (the scripts are made from it), these at least.
COMMANDS = {
    name
    for action in _parser()._actions
    if isinstance(action, argparse._SubParsersAction)
    for name in action.choices
}
assert {"generate", "remove", "list", "inspect", "gc", "completion", "unit"} <= COMMANDS


def rootfs(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rootfs_core", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd="/",
    )


@pytest.fixture
def shell_env(discovery_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A ``rootfs`` on PATH that is this checkout's command, and the in-test backends."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "rootfs").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m rootfs_core "$@"\n')
    (bin_dir / "rootfs").chmod(0o755)
    monkeypatch.delenv("ROOTFS_BASE_DIR", raising=False)
    monkeypatch.setenv("ROOTFS_CONFIG", "/nonexistent/config.toml")
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


@pytest.fixture
def instance_id(base_dir: str, registry: Registry, prototype: str) -> Iterator[str]:
    rfs = RootFS(base_dir, registry=registry, backend="bindtest")
    root = rfs.generate(prototype)
    instance = rfs.instance(root)
    assert instance is not None
    yield instance.id
    rfs.remove(root)


def _bash(script: str, env: dict[str, str], *words: str) -> list[str]:
    """What ``_rootfs_complete`` offers for the command line ``words`` (the
    last one being completed)."""
    program = (
        f"{script}\n"
        f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_rootfs_complete\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    out = subprocess.run(
        ["bash", "--norc", "-c", program], capture_output=True, text=True, env=env, timeout=60, cwd="/"
    )
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_live_ids(
    shell_env: dict[str, str], base_dir: str, instance_id: str
) -> None:
    script = rootfs("completion", "bash")
    assert script.returncode == 0 and script.stderr == ""
    text = script.stdout
    assert "complete -F _rootfs_complete rootfs" in text

    assert set(_bash(text, shell_env, "rootfs", "")) == COMMANDS
    assert _bash(text, shell_env, "rootfs", "ge") == ["generate"]
    assert _bash(text, shell_env, "rootfs", "--base-dir", base_dir, "insp") == ["inspect"]
    assert {"--base-dir", "--backend", "--version", "--help"} <= set(_bash(text, shell_env, "rootfs", "--"))
    listed = set(_bash(text, shell_env, "rootfs", "list", "--"))
    assert {"--json", "--quiet", "--state", "--prototype", "--backend", "--base-dir"} <= listed
    assert "--missing-ok" in _bash(text, shell_env, "rootfs", "remove", "--")
    assert _bash(text, shell_env, "rootfs", "list", "--state", "re") == ["ready", "removing"]
    assert _bash(text, shell_env, "rootfs", "--backend", "bind") == ["bindtest"]
    assert _bash(text, shell_env, "rootfs", "completion", "") == ["bash", "zsh"]
    assert _bash(text, shell_env, "rootfs", "unit", "") == ["gc"]
    # the ids of the base directory named on the command line, for remove and inspect
    for command in ("remove", "inspect", "usage"):
        assert _bash(text, shell_env, "rootfs", "--base-dir", base_dir, command, "") == [instance_id]
    assert _bash(text, shell_env, "rootfs", f"--base-dir={base_dir}", "remove", instance_id[:4]) == [
        instance_id
    ]
    # a value of an option is not taken for the command
    assert _bash(text, shell_env, "rootfs", "--backend", "bindtest", "remove", "") == []


def test_listing_ids_for_completion_never_changes_anything(shell_env: dict[str, str], tmp_path: Path) -> None:
    """Pressing TAB must not create the base directory, sweep or fail."""
    missing = tmp_path / "no-such-base"
    out = rootfs("--base-dir", str(missing), "completion", "--list-ids")
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""
    assert not missing.exists()
    assert rootfs("completion").returncode == 2  # which shell?


def _zsh(script: str, env: dict[str, str], prefix: str, *words: str) -> list[str]:
    """What ``_rootfs`` adds for ``words`` (the last one being completed,
    ``prefix`` typed of it), with compadd and _files recording their words
    (zsh filters by the prefix itself)."""
    program = (
        "compdef() { :; }\n"
        'compadd() { if [[ $1 == -a ]]; then print -l -- ${(P)2}; else shift; print -l -- "$@"; fi; }\n'
        "_files() { print -- '<directories>'; }\n"
        f"{script}\n"
        f"words=({' '.join(shlex.quote(w) for w in words)})\n"
        f"CURRENT={len(words)}\n"
        f"PREFIX={shlex.quote(prefix)}\n"
        "_rootfs\n"
    )
    out = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    return [line for line in out.stdout.splitlines() if line]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="zsh is not installed (apt-get install zsh)")
def test_zsh_completes_commands_options_and_live_ids(
    shell_env: dict[str, str], base_dir: str, instance_id: str
) -> None:
    script = rootfs("completion", "zsh")
    assert script.returncode == 0 and script.stdout.startswith("#compdef rootfs\n")
    text = script.stdout
    syntax = subprocess.run(["zsh", "-n", "-c", text], capture_output=True, text=True, timeout=60)
    assert syntax.returncode == 0, syntax.stderr
    assert set(_zsh(text, shell_env, "", "rootfs", "")) == COMMANDS
    assert "--base-dir" in _zsh(text, shell_env, "--", "rootfs", "--")
    assert "--state" in _zsh(text, shell_env, "--", "rootfs", "list", "--")
    assert _zsh(text, shell_env, "", "rootfs", "list", "--state", "") == [
        "ready",
        "incomplete",
        "removing",
        "unmounted",
    ]
    assert "bindtest" in _zsh(text, shell_env, "", "rootfs", "--backend", "")
    assert _zsh(text, shell_env, "", "rootfs", "--base-dir", base_dir, "remove", "") == [instance_id]
    assert _zsh(text, shell_env, "", "rootfs", "generate", "") == ["<directories>"]
