"""The ``rootfs`` command's contract: output, JSON keys, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from rootfs_core.testing.checks import instance_mounts


def rootfs(*args: str, base_dir: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "rootfs_core.cli"]
    if base_dir is not None:
        argv += ["--base-dir", base_dir]
    # cwd="/" so "python -m" imports the installed rootfs_core, not this checkout
    return subprocess.run([*argv, *args], capture_output=True, text=True, check=False, timeout=120, cwd="/")


@pytest.fixture
def cli_env(discovery_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROOTFS_BACKEND", raising=False)
    monkeypatch.setenv("ROOTFS_CONFIG", "/nonexistent/config.toml")


def test_generate_list_remove_json(cli_env: None, base_dir: str, prototype: str) -> None:
    gen = rootfs("--backend", "bindtest", "generate", prototype, "--json", base_dir=base_dir)
    assert gen.returncode == 0, gen.stderr
    data = json.loads(gen.stdout)
    assert {"root", "id", "backend", "prototype", "seconds"} <= set(data)
    assert data["backend"] == "bindtest" and data["prototype"] == prototype
    assert os.path.isfile(os.path.join(data["root"], "etc/hostname"))

    listed = rootfs("list", "--json", base_dir=base_dir)
    assert listed.returncode == 0
    (row,) = json.loads(listed.stdout)
    assert {k: row[k] for k in ("id", "root", "backend", "prototype", "state")} == {
        "id": data["id"],
        "root": data["root"],
        "backend": "bindtest",
        "prototype": prototype,
        "state": "ready",
    }
    removed = rootfs("remove", data["root"], base_dir=base_dir)
    assert removed.returncode == 0 and removed.stdout == ""
    assert instance_mounts(base_dir) == []
    assert json.loads(rootfs("list", "--json", base_dir=base_dir).stdout) == []


def test_plain_generate_prints_only_the_path_and_options_pass_through(
    cli_env: None, base_dir: str, prototype: str
) -> None:
    gen = rootfs("--backend", "bindtest", "generate", prototype, "-o", "tmp_size=2M", base_dir=base_dir)
    assert gen.returncode == 0, gen.stderr
    root = gen.stdout.strip()
    assert gen.stdout == root + "\n" and os.path.isdir(root)
    (row,) = json.loads(rootfs("list", "--json", base_dir=base_dir).stdout)
    assert row["options"] == {"tmp_size": "2M"}
    assert rootfs("remove", os.path.basename(os.path.dirname(root)), base_dir=base_dir).returncode == 0


def test_backends_json_shows_broken_plugins(cli_env: None, base_dir: str) -> None:
    out = rootfs("backends", "--json", base_dir=base_dir)
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    for row in rows.values():
        assert {"name", "priority", "supported", "reason", "selected", "distribution"} <= set(row)
    assert rows["import-fails"]["supported"] is False
    assert "ImportError" in rows["import-fails"]["reason"]
    assert rows["bad-hooks"]["supported"] is False
    assert rows["bindtest"]["supported"] is True and rows["bindtest"]["reason"] is None
    assert rows["bindtest"]["distribution"] == "rootfs-testbackends"
    assert sum(row["selected"] for row in rows.values()) == 1
    text = rootfs("backends", base_dir=base_dir)
    assert text.returncode == 0 and "import-fails" in text.stdout


def test_verbose_logs_each_step_to_stderr(cli_env: None, base_dir: str, prototype: str) -> None:
    gen = rootfs("-v", "--backend", "bindtest", "generate", prototype, base_dir=base_dir)
    assert gen.returncode == 0
    for word in ("mkdir", "mount", "copy"):
        assert word in gen.stderr
    rem = rootfs("remove", gen.stdout.strip(), "-v", base_dir=base_dir)
    assert "umount" in rem.stderr and "rmdir" in rem.stderr


@pytest.mark.parametrize(
    ("args", "error_id"),
    [
        (["remove", "/etc"], "ErrNotOurRoot"),
        (["--backend", "nonexistent", "generate", "/"], "ErrPrototypeOverlapsBase"),
        (["--backend", "nonexistent", "generate", "/nonexistent"], "ErrPrototypeMissing"),
        (["--backend", "nonexistent", "generate", "PROTO"], "ErrUnknownBackend"),
        (["--backend", "refuses", "generate", "PROTO"], "ErrBackendUnsupported"),
        (["--backend", "bindtest", "generate", "PROTO", "--size", "1M"], "ErrBadOption"),
    ],
)
def test_operation_errors_exit_1_with_the_id(
    cli_env: None, base_dir: str, prototype: str, args: list[str], error_id: str
) -> None:
    out = rootfs(*[a.replace("PROTO", prototype) for a in args], base_dir=base_dir)
    assert out.returncode == 1
    assert out.stderr.startswith(f"rootfs: {error_id}: ")
    assert "Traceback" not in out.stderr


def test_constructor_errors_exit_1(cli_env: None, tmp_path: object) -> None:
    out = rootfs("list", base_dir="/nonexistent/base")
    assert out.returncode == 1 and "ErrRwBaseDirMissing" in out.stderr


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["generate", "--bogus"], ["generate", "-o", "novalue"]])
def test_usage_errors_exit_2(cli_env: None, base_dir: str, args: list[str]) -> None:
    out = rootfs(*args, base_dir=base_dir)
    assert out.returncode == 2
    assert "usage:" in out.stderr and "Traceback" not in out.stderr


def test_gc_json(cli_env: None, base_dir: str) -> None:
    out = rootfs("gc", "--dry-run", "--json", base_dir=base_dir)
    assert out.returncode == 0
    assert json.loads(out.stdout) == {
        "dry_run": True,
        "instances": [],
        "unmounted": [],
        "orphans": [],
        "waiting": [],
        "failed": {},
    }
