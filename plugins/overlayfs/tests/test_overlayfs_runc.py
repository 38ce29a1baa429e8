"""End to end: a real OCI runtime runs a container in a generated root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rootfs_core import RootFS
from rootfs_core.testing.fixtures import assert_base_dir_clean
from rootfs_core.testing.runc import need_runc, run_container


@pytest.mark.parametrize("size", [None, "64M"])
def test_runc_runs_a_container_in_the_root(
    rfs: RootFS, base_dir: str, busybox_prototype: str, tmp_path: Path, size: str | None
) -> None:
    need_runc()
    root = rfs.generate(busybox_prototype, size=size)
    run = run_container(tmp_path, root, ["sh", "-c", "echo hi > /written && mv /etc /etc.moved"])
    assert run.returncode == 0, run.stderr
    with open(f"{root}/written", "rb") as fh:
        assert fh.read() == b"hi\n"
    assert os.path.isdir(f"{root}/etc.moved") and not os.path.exists(f"{root}/etc")
    assert not os.path.exists(f"{busybox_prototype}/written")
    assert os.path.isdir(f"{busybox_prototype}/etc")
    rfs.remove(root)
    assert_base_dir_clean(base_dir)
