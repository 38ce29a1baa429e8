"""End to end: a real OCI runtime runs a container in a generated root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from rootfs_core import RootFS
from rootfs_core.testing.fixtures import assert_base_dir_clean


def bundle_config(bundle: Path, root: str, args: list[str]) -> None:
    """``runc spec``, adapted to this host: a writable root, no terminal, and
    neither cgroup limits nor a cgroup namespace or mount (the host's cgroups
    are hybrid, which those need to be unified)."""
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    config = bundle / "config.json"
    spec: dict[str, Any] = json.loads(config.read_text())
    spec["root"] = {"path": root, "readonly": False}
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["linux"].pop("resources", None)
    spec["linux"]["namespaces"] = [ns for ns in spec["linux"]["namespaces"] if ns["type"] != "cgroup"]
    spec["mounts"] = [m for m in spec["mounts"] if m["type"] != "cgroup"]
    config.write_text(json.dumps(spec))


@pytest.mark.parametrize("size", [None, "64M"])
def test_runc_runs_a_container_in_the_root(
    rfs: RootFS, base_dir: str, busybox_prototype: str, tmp_path: Path, size: str | None
) -> None:
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (apt-get install runc)")
    root = rfs.generate(busybox_prototype, size=size)
    container = f"rootfs-overlayfs-{os.getpid()}-{os.path.basename(os.path.dirname(root))}"
    try:
        bundle_config(tmp_path, root, ["sh", "-c", "echo hi > /written && mv /etc /etc.moved"])
        run = subprocess.run(
            ["runc", "run", "--bundle", str(tmp_path), container],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert run.returncode == 0, run.stderr.decode(errors="replace")
    finally:
        subprocess.run(["runc", "delete", "--force", container], capture_output=True, check=False)
    with open(f"{root}/written", "rb") as fh:
        assert fh.read() == b"hi\n"
    assert os.path.isdir(f"{root}/etc.moved") and not os.path.exists(f"{root}/etc")
    assert not os.path.exists(f"{busybox_prototype}/written")
    assert os.path.isdir(f"{busybox_prototype}/etc")
    rfs.remove(root)
    assert_base_dir_clean(base_dir)
