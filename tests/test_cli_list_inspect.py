"""``rootfs list`` (a header, -q, filters, ages, created_at in JSON) and
``rootfs inspect`` (everything known about one instance), through the real
command."""

from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts
from rootfs_core.testing.prototypes import make_tiny_prototype


def rootfs(*args: str, base_dir: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "rootfs_core"]
    if base_dir is not None:
        argv += ["--base-dir", base_dir]
    return subprocess.run([*argv, *args], capture_output=True, text=True, check=False, timeout=120, cwd="/")


@pytest.fixture
def cli_env(discovery_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROOTFS_BACKEND", raising=False)
    monkeypatch.delenv("ROOTFS_BASE_DIR", raising=False)
    monkeypatch.setenv("ROOTFS_CONFIG", "/nonexistent/config.toml")


def _generate(base_dir: str, prototype: str, *extra: str) -> dict[str, object]:
    out = rootfs("--backend", "bindtest", "generate", prototype, "--json", *extra, base_dir=base_dir)
    assert out.returncode == 0, out.stderr
    data: dict[str, object] = json.loads(out.stdout)
    return data


@pytest.fixture
def other_prototype(tmp_path: Path) -> str:
    """A second tiny prototype (made, never copied: it has device nodes)."""
    return make_tiny_prototype(str(tmp_path / "other-prototype"))


def test_list_has_a_header_an_age_column_and_filters(
    cli_env: None, base_dir: str, prototype: str, other_prototype: str, tmp_path: Path
) -> None:
    first = _generate(base_dir, prototype)
    second = _generate(base_dir, other_prototype)
    try:
        out = rootfs("list", base_dir=base_dir)
        assert out.returncode == 0, out.stderr
        header, *rows = out.stdout.splitlines()
        assert header.split() == ["ID", "STATE", "BACKEND", "AGE", "ROOT", "PROTOTYPE"]
        assert [row.split()[:3] + row.split()[4:] for row in rows] == [  # oldest first
            [first["id"], "ready", "bindtest", first["root"], prototype],
            [second["id"], "ready", "bindtest", second["root"], other_prototype],
        ]
        assert all(re.fullmatch(r"\d+s", row.split()[3]) for row in rows)
        # columns line up under the header
        assert {row.index(" ready ") for row in rows} == {header.index("STATE") - 1}

        assert rootfs("list", "-q", base_dir=base_dir).stdout == f"{first['id']}\n{second['id']}\n"
        link = tmp_path / "link-to-other"
        link.symlink_to(other_prototype)
        for wanted in (other_prototype, str(link)):
            only = rootfs("list", "-q", "--prototype", wanted, base_dir=base_dir)
            assert only.stdout == f"{second['id']}\n", only.stderr
        assert rootfs("list", "-q", "--state", "ready", base_dir=base_dir).stdout.count("\n") == 2
        assert rootfs("list", "-q", "--state", "removing", base_dir=base_dir).stdout == ""
        assert rootfs("list", "-q", "--backend", "bindtest", base_dir=base_dir).stdout.count("\n") == 2
        assert rootfs("list", "-q", "--backend", "quilt", base_dir=base_dir).stdout == ""
        # before the command name too: a filter, never a choice of backend
        assert rootfs("--backend", "quilt", "list", "-q", base_dir=base_dir).stdout == ""
        empty = rootfs("list", "--state", "unmounted", base_dir=base_dir)
        assert empty.returncode == 0 and empty.stdout == ""  # no header for no rows
        assert rootfs("list", "--state", "bogus", base_dir=base_dir).returncode == 2
        assert rootfs("list", "-q", "--json", base_dir=base_dir).returncode == 2
    finally:
        for data in (first, second):
            assert rootfs("remove", str(data["id"]), base_dir=base_dir).returncode == 0
    assert instance_mounts(base_dir) == []


def test_list_json_keeps_its_keys_and_types_and_adds_created_at(
    cli_env: None, base_dir: str, prototype: str
) -> None:
    data = _generate(base_dir, prototype, "-o", "tmp_size=2M")
    try:
        out = rootfs("list", "--json", "--backend", "bindtest", base_dir=base_dir)
        assert out.returncode == 0, out.stderr
        (row,) = json.loads(out.stdout)
        kinds = {"id": str, "root": str, "backend": str, "prototype": str, "state": str, "options": dict}
        for key, kind in kinds.items():
            assert isinstance(row[key], kind), key
        assert isinstance(row["created"], float)  # the epoch, as before
        created_at = datetime.datetime.fromisoformat(row["created_at"])
        assert created_at.utcoffset() == datetime.timedelta(0)  # UTC, ISO 8601
        assert abs(created_at.timestamp() - row["created"]) < 1
        assert row["id"] == data["id"] and row["options"] == {"tmp_size": "2M"}
    finally:
        assert rootfs("remove", str(data["id"]), base_dir=base_dir).returncode == 0


def test_inspect_shows_everything_known_and_what_is_mounted_now(
    cli_env: None, base_dir: str, prototype: str
) -> None:
    data = _generate(base_dir, prototype, "-o", "tmp_size=2M")
    root = str(data["root"])
    try:
        out = rootfs("inspect", str(data["id"]), "--json", base_dir=base_dir)
        assert out.returncode == 0, out.stderr
        info = json.loads(out.stdout)
        assert {k: info[k] for k in ("id", "root", "backend", "prototype", "state", "options")} == {
            "id": data["id"],
            "root": root,
            "backend": "bindtest",
            "prototype": prototype,
            "state": "ready",
            "options": {"tmp_size": "2M"},
        }
        assert info["layers"] == [prototype] and info["read_only"] is False
        assert isinstance(info["created"], float) and info["created_at"].endswith("+00:00")
        assert info["usage"]["bytes"] > 0 and info["usage"]["inodes"] > 0  # the copy of etc
        # bindtest: the prototype bound on the root, a copy of etc bound on
        # etc, a tmpfs on tmp; from the journal, in the order they were made
        mounts = info["mounts"]
        assert [(m["path"], m["kind"], m["mounted"]) for m in mounts] == [
            (root, "mount", True),
            (f"{root}/etc", "mount", True),
            (f"{root}/tmp", "mount", True),
        ]
        assert mounts[2]["fstype"] == "tmpfs"
        by_root = rootfs("inspect", root, "--json", base_dir=base_dir)
        assert json.loads(by_root.stdout)["mounts"] == mounts

        text = rootfs("inspect", root, base_dir=base_dir)
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert f"id          {data['id']}" in lines and "state       ready" in lines
        assert "options     tmp_size=2M" in lines
        assert any(re.fullmatch(rf"  mounted    tmpfs\s+{re.escape(root)}/tmp", line) for line in lines)

        # Someone unmounts one of its mounts: inspect says so.
        LinuxSyscalls().umount(f"{root}/tmp", UMOUNT_NOFOLLOW)
        again = json.loads(rootfs("inspect", str(data["id"]), "--json", base_dir=base_dir).stdout)
        assert [m["mounted"] for m in again["mounts"]] == [True, True, False]
        assert again["mounts"][2]["fstype"] is None
    finally:
        assert rootfs("remove", str(data["id"]), base_dir=base_dir).returncode == 0
    assert instance_mounts(base_dir) == []


@pytest.mark.parametrize(
    ("target", "error_id"), [("0123456789ab", "ErrNoSuchRoot"), ("/etc", "ErrNotOurRoot")]
)
def test_inspect_of_what_is_not_there(cli_env: None, base_dir: str, target: str, error_id: str) -> None:
    out = rootfs("inspect", target, "--json", base_dir=base_dir)
    assert out.returncode == 1
    assert json.loads(out.stdout)["error"] == error_id
    assert out.stderr.startswith(f"rootfs: {error_id}: ")
    assert os.listdir(base_dir) == []  # nothing made in the base directory for a look
