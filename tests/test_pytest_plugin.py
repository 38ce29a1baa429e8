"""rootfs-core's pytest plugin is opt-in: installing rootfs-core must not move
someone else's test session into a new mount namespace nor clear their
``ROOTFS_CACHE``; ``-p rootfs_core.testing.fixtures`` (or ``pytest_plugins``)
turns it on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distribution
from pathlib import Path

import pytest

# A test suite that has nothing to do with rootfs: it records what it saw,
# then asserts that nothing was done to its session.
UNRELATED_TEST = """\
import json
import os


def test_untouched():
    seen = {"ns": os.readlink("/proc/self/ns/mnt"), "cache": os.environ.get("ROOTFS_CACHE")}
    with open(os.environ["SEEN_FILE"], "w") as fh:
        json.dump(seen, fh)
    assert seen["ns"] == os.environ["CALLER_MNT_NS"], "moved into another mount namespace"
    assert seen["cache"] == os.environ["CALLER_ROOTFS_CACHE"], "ROOTFS_CACHE changed"
"""

# The caller's value, which a test with the plugin loaded sees replaced by "".
CACHE = "/nonexistent/rootfs-cache-of-the-caller"


def run_unrelated_suite(
    tmp_path: Path, *pytest_args: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run UNRELATED_TEST in its own project (rootdir and configuration file
    in ``tmp_path``) with this interpreter, where rootfs-core is installed;
    return the run and what its test saw."""
    project = tmp_path / "unrelated"
    project.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")  # its own configuration, not ours
    (project / "test_unrelated.py").write_text(UNRELATED_TEST)
    seen_file = tmp_path / "seen.json"
    env = dict(os.environ)
    # Nothing of this session may leak into that one: no extra options or
    # plugins from the environment, plugin autoloading on (as for any user),
    # and the plugin's own namespace switch not turned off.
    for name in (
        "PYTEST_ADDOPTS",
        "PYTEST_PLUGINS",
        "PYTEST_DISABLE_PLUGIN_AUTOLOAD",
        "ROOTFS_TEST_HOST_NAMESPACE",
    ):
        env.pop(name, None)
    env.update(
        CALLER_MNT_NS=os.readlink("/proc/self/ns/mnt"),
        CALLER_ROOTFS_CACHE=CACHE,
        ROOTFS_CACHE=CACHE,
        SEEN_FILE=str(seen_file),
    )
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(project), *pytest_args]
    out = subprocess.run(
        [*argv, str(project / "test_unrelated.py")],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd=project,
        env=env,
    )
    assert seen_file.is_file(), f"the test did not run:\n{out.stdout}\n{out.stderr}"
    return out, json.loads(seen_file.read_text())


def test_installing_rootfs_core_leaves_other_test_suites_alone(tmp_path: Path) -> None:
    assert distribution("rootfs-core").version  # installed, so its entry points count
    out, seen = run_unrelated_suite(tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert seen == {"ns": os.readlink("/proc/self/ns/mnt"), "cache": CACHE}
    plugins = [line for line in out.stdout.splitlines() if line.startswith("plugins:")]
    assert not any("rootfs" in line for line in plugins), plugins  # not even listed


def test_the_plugin_is_loaded_when_asked_for(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the plugin moves a session into a mount namespace only as root")
    out, seen = run_unrelated_suite(tmp_path, "-p", "rootfs_core.testing.fixtures")
    assert out.returncode == 1, out.stdout + out.stderr  # the unrelated test notices
    assert seen["ns"] != os.readlink("/proc/self/ns/mnt")
    assert seen["cache"] == ""
