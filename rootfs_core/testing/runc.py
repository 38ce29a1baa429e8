"""A real OCI runtime for tests: runc, running a container in a generated root.

A container is what the roots are made for, so the end-to-end tests run one.
Every test builds its bundle with ``write_bundle``, so that an adaptation the
host needs is made once, for all of them: ``runc spec`` with the root
writable (a backend's own read-only parts stay read-only), no terminal (the
tests have none), and neither cgroup limits nor a cgroup namespace or mount
(the hosts these tests run on may have hybrid cgroups, which those need to
be unified).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Sequence
from typing import Any

import pytest

__all__ = ["need_runc", "run_container", "write_bundle"]


def need_runc() -> None:
    """Skip the test unless runc is installed."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (apt-get install runc)")


def write_bundle(bundle: str | os.PathLike[str], root: str, args: Sequence[str]) -> str:
    """Write ``config.json`` into the existing directory ``bundle``: a
    container whose ``/`` is ``root`` and whose process runs ``args``.
    Returns the path of ``config.json``."""
    subprocess.run(["runc", "spec"], cwd=bundle, check=True, capture_output=True, timeout=60)
    config = os.path.join(bundle, "config.json")
    with open(config, encoding="utf-8") as fh:
        spec: dict[str, Any] = json.load(fh)
    spec["root"] = {"path": root, "readonly": False}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = list(args)
    spec["linux"].pop("resources", None)
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "cgroup"]
    spec["mounts"] = [m for m in spec["mounts"] if m["type"] != "cgroup"]
    with open(config, "w", encoding="utf-8") as fh:
        json.dump(spec, fh)
    return config


def run_container(
    bundle: str | os.PathLike[str], root: str, args: Sequence[str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` in a container on ``root`` to completion (``runc run``,
    its bundle written in ``bundle``) and return what it printed and its
    exit status. The container is deleted whatever happened, so runc holds
    no copy of the root's mounts afterwards. Call ``need_runc`` first,
    before anything is generated."""
    write_bundle(bundle, root, args)
    name = f"rootfs-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        return subprocess.run(
            ["runc", "run", "--bundle", os.fspath(bundle), name],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            cwd="/",
            timeout=timeout,
            check=False,
        )
    finally:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True, check=False, timeout=60)
