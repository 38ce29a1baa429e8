"""The shipped conformance suite, run against the in-test backend, and its
command-line runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rootfs_core.hookspecs import BAND_COPY, BAND_KERNEL_UNION
from rootfs_core.testing.conformance import BackendConformance


@pytest.fixture(autouse=True)
def _in_test_backends(discovery_path: str) -> None:
    """bindtest is found through real entry-point discovery."""


class TestBindtest(BackendConformance):
    backend = "bindtest"
    band = BAND_COPY


class TestBindtestSimulated(BackendConformance):
    backend = "bindtest"
    band = BAND_COPY
    real_mounts = False


class TestRefuses(BackendConformance):
    """A backend whose probe says no: every case that needs a root skips
    with its reason; its description, its band, its probe's explanation and
    the refusals before any probe are still checked."""

    backend = "refuses"
    band = BAND_KERNEL_UNION


# bindtest (priority 120) claiming the kernel unions' band.
WRONG_BAND = """\
from rootfs_core.hookspecs import BAND_KERNEL_UNION
from rootfs_core.testing.conformance import BackendConformance


class TestWrongBand(BackendConformance):
    backend = "bindtest"
    band = BAND_KERNEL_UNION
"""


def test_a_priority_outside_the_claimed_band_fails_the_suite(tmp_path: Path) -> None:
    module = tmp_path / "test_wrong_band.py"
    module.write_text(WRONG_BAND)
    cases = [
        f"{module}::TestWrongBand::{name}"
        for name in ("test_describes_itself", "test_priority_is_in_the_band_it_claims")
    ]
    pytest_argv = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        "rootfs_core.testing.fixtures",
    ]
    out = subprocess.run(
        [*pytest_argv, "-q", *cases],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd="/",
    )
    assert out.returncode == 1, out.stdout[-3000:]
    assert "1 failed, 1 passed" in out.stdout, out.stdout[-3000:]
    assert "bindtest's priority 120 is outside its band 300..399" in out.stdout


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
