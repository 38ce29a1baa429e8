"""End to end: a real OCI runtime runs a container in a quilt root."""

from __future__ import annotations

import os
from pathlib import Path

from rootfs_core import RootFS
from rootfs_core.testing.fixtures import assert_base_dir_clean
from rootfs_core.testing.runc import need_runc, run_container

SCRIPT = "echo hi > /tmp/written && if touch /bin/nope 2>/dev/null; then echo rw; else echo ro; fi"


def test_runc_runs_in_a_quilt_root(quilt: RootFS, busybox_prototype: str, tmp_path: Path) -> None:
    need_runc()
    root = quilt.generate(busybox_prototype)
    try:
        done = run_container(tmp_path, root, ["sh", "-c", SCRIPT], timeout=60)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ro"  # outside the patches the root is read-only
        with open(os.path.join(root, "tmp", "written"), encoding="utf-8") as fh:
            assert fh.read() == "hi\n"
        assert not os.path.exists(os.path.join(busybox_prototype, "tmp", "written"))
    finally:
        quilt.remove(root)
    assert_base_dir_clean(quilt.base_dir)
