"""End to end: a real OCI runtime runs a container in a quilt root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from rootfs_core import RootFS
from rootfs_core.testing.fixtures import assert_base_dir_clean

SCRIPT = "echo hi > /tmp/written && if touch /bin/nope 2>/dev/null; then echo rw; else echo ro; fi"


def _spec(bundle: Path, root: str) -> None:
    """``runc spec``, adapted to this host (see the GUIDE): no terminal, no
    resource limits, no cgroup namespace or mount (hybrid cgroups)."""
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["root"] = {"path": root, "readonly": False}  # the quilt is read-only outside its patches anyway
    config["process"]["terminal"] = False
    config["process"]["args"] = ["sh", "-c", SCRIPT]
    config["linux"].pop("resources", None)
    config["linux"]["namespaces"] = [n for n in config["linux"]["namespaces"] if n["type"] != "cgroup"]
    config["mounts"] = [m for m in config["mounts"] if m["type"] != "cgroup"]
    (bundle / "config.json").write_text(json.dumps(config))


def test_runc_runs_in_a_quilt_root(quilt: RootFS, busybox_prototype: str, tmp_path: Path) -> None:
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (apt-get install runc)")
    root = quilt.generate(busybox_prototype)
    container = f"rootfs-quilt-{uuid.uuid4().hex[:12]}"
    try:
        _spec(tmp_path, root)
        try:
            done = subprocess.run(
                ["runc", "run", "--bundle", str(tmp_path), container],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            subprocess.run(["runc", "delete", "--force", container], capture_output=True)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ro"  # outside the patches the root is read-only
        with open(os.path.join(root, "tmp", "written"), encoding="utf-8") as fh:
            assert fh.read() == "hi\n"
        assert not os.path.exists(os.path.join(busybox_prototype, "tmp", "written"))
    finally:
        quilt.remove(root)
    assert_base_dir_clean(quilt.base_dir)
