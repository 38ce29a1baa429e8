"""The fault-injection matrix (every step of generate and of remove fails in
turn; afterwards no mount, directory or record that should not exist, the
prototype unchanged) is rootfs-core's conformance suite,
``rootfs_core.testing.conformance.BackendConformance``, which each in-tree
backend's own tests adopt and its tox environment runs. This is not run
again here; what is checked is that no backend silently stops adopting it,
with real mounts and with simulated ones.
"""

from __future__ import annotations

import ast
import glob
import os

import pytest

PLUGINS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "plugins")
IN_TREE = ("overlayfs", "quilt", "aufs")


def _adoptions(backend: str) -> list[dict[str, object]]:
    """The classes of the backend's tests that inherit BackendConformance,
    with their class attributes (``backend``, ``real_mounts``)."""
    found = []
    for path in glob.glob(os.path.join(PLUGINS, backend, "tests", "test_*.py")):
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            if not any(isinstance(b, ast.Name) and b.id == "BackendConformance" for b in node.bases):
                continue
            attributes: dict[str, object] = {"real_mounts": True}
            for item in node.body:
                if isinstance(item, ast.Assign) and isinstance(item.value, ast.Constant):
                    for target in item.targets:
                        if isinstance(target, ast.Name):
                            attributes[target.id] = item.value.value
            found.append(attributes)
    return found


@pytest.mark.parametrize("backend", IN_TREE)
def test_every_in_tree_backend_runs_the_fault_injection_matrix(backend: str) -> None:
    """Each in-tree backend adopts the conformance suite (and with it the
    fail-every-step matrix) both against real mounts and simulated ones."""
    if not os.path.isdir(os.path.join(PLUGINS, backend, "tests")):
        pytest.skip(f"the source tree of {backend} is not here (installed from a wheel only)")
    adopted = _adoptions(backend)
    assert {(a.get("backend"), a["real_mounts"]) for a in adopted} == {(backend, True), (backend, False)}
