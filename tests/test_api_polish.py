"""The API's small conveniences: reprs, ``GcReport`` at the top level, and
``BackendStatus`` under the same names in ``rootfs backends --json``."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

import rootfs_core
from rootfs_core import BackendStatus, ErrorId, GcReport, ImplErrorId, RootFS, RootFSError
from rootfs_core.cli import _without_probe_paths
from rootfs_core.registry import Registry


def test_repr_of_rootfs_names_its_base_dir_and_forced_backend(base_dir: str, registry: Registry) -> None:
    assert repr(RootFS(base_dir, registry=registry)) == f"RootFS({base_dir!r})"
    forced = RootFS(base_dir, registry=registry, backend="bindtest")
    assert repr(forced) == f"RootFS({base_dir!r}, backend='bindtest')"


def test_repr_of_an_error_names_its_id() -> None:
    err = RootFSError(ErrorId.ErrRootBusy, "/srv/r/root is in use by 42 (sh)")
    assert repr(err) == "RootFSError(ErrorId.ErrRootBusy, '/srv/r/root is in use by 42 (sh)')"
    assert (
        repr(RootFSError(ImplErrorId.ErrRwBaseDirMissing, "x"))
        == "RootFSError(ImplErrorId.ErrRwBaseDirMissing, 'x')"
    )
    assert str(err) == "ErrRootBusy: /srv/r/root is in use by 42 (sh)"  # unchanged


def test_gc_report_is_importable_from_the_package(base_dir: str, registry: Registry) -> None:
    assert "GcReport" in rootfs_core.__all__
    report = RootFS(base_dir, registry=registry).gc()
    assert isinstance(report, GcReport)


def test_backends_json_has_every_backend_status_field_under_its_name(
    discovery_path: str, base_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ROOTFS_BACKEND", raising=False)
    monkeypatch.setenv("ROOTFS_CONFIG", "/nonexistent/config.toml")
    out = subprocess.run(
        [sys.executable, "-m", "rootfs_core", "--base-dir", base_dir, "backends", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd="/",
    )
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    statuses = {s.name: s for s in RootFS(base_dir).backends()}
    assert set(rows) == set(statuses)
    fields = [f.name for f in dataclasses.fields(BackendStatus)]
    for name, status in statuses.items():
        row = rows[name]
        expected = dataclasses.asdict(status)
        if expected["reason"] is not None:
            expected["reason"] = _without_probe_paths(expected["reason"], base_dir)
        assert {f: row[f] for f in fields} == expected
        # the keys it always had keep their types
        assert isinstance(row["name"], str) and isinstance(row["supported"], bool)
        assert isinstance(row["selected"], bool) and isinstance(row["entry_point"], str)
        assert row["priority"] is None or isinstance(row["priority"], int)
        assert row["reason"] is None or isinstance(row["reason"], str)
        assert row["distribution"] is None or isinstance(row["distribution"], str)
        assert row["entry_point"] == row["target"]
