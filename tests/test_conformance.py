"""The shipped conformance suite, run against the in-test backend, and its
command-line runner."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rootfs_core.testing.conformance import BackendConformance


@pytest.fixture(autouse=True)
def _in_test_backends(discovery_path: str) -> None:
    """bindtest is found through real entry-point discovery."""


class TestBindtest(BackendConformance):
    backend = "bindtest"


class TestBindtestSimulated(BackendConformance):
    backend = "bindtest"
    real_mounts = False


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rootfs_core.testing", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd="/",
    )


def test_runner_passes_a_conforming_backend() -> None:
    out = _run("bindtest")
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and "failed" not in out.stdout


def test_runner_fails_for_a_missing_backend() -> None:
    """At once, with exit status 2, before any test runs (more in
    tests/test_conformance_runner.py)."""
    out = _run("no-such-backend")
    assert out.returncode == 2
    assert "ErrUnknownBackend" in out.stderr and out.stdout == ""
