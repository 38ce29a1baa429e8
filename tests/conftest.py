"""Core tests use the in-test backends of tests/backends, found either through
real entry-point discovery (``discovery_path``) or registered directly
(``registry``) so that whatever backends are installed cannot change the
outcome."""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator

import pytest

from rootfs_core.core import RootFS
from rootfs_core.registry import Registry

BACKENDS_DIR = os.path.join(os.path.dirname(__file__), "backends")
GOOD = {
    "bindtest": "rootfs_testbackends.bindtest",
    "crashy": "rootfs_testbackends.crashy",
    "refuses": "rootfs_testbackends.refuses",
    "probe-raises": "rootfs_testbackends.probe_raises",
}


@pytest.fixture
def discovery_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Put the in-test distribution on sys.path (and PYTHONPATH for children)."""
    monkeypatch.syspath_prepend(BACKENDS_DIR)
    monkeypatch.setenv("PYTHONPATH", BACKENDS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    yield BACKENDS_DIR


@pytest.fixture
def registry(discovery_path: str) -> Registry:
    """The in-test backends only, registered as discovery would."""
    plugins = {name: (module + ":", importlib.import_module(module)) for name, module in GOOD.items()}
    return Registry(plugins, {"import-fails": ("rootfs_testbackends.import_fails", "ImportError: test")})


@pytest.fixture
def rfs(base_dir: str, registry: Registry) -> RootFS:
    return RootFS(base_dir, registry=registry)
