"""Real aufs mounts. They run wherever the probe says aufs works, and skip
with the probe's own reason everywhere else (mainline kernels)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from rootfs_core import RootFS
from rootfs_core.mounttable import filesystem_of
from rootfs_core.testing.checks import instance_mounts


@pytest.fixture
def aufs(base_dir: str) -> RootFS:
    rfs = RootFS(base_dir, backend="aufs")
    verdict = rfs.probe("aufs")
    if not verdict.supported:
        pytest.skip(f"aufs is not usable here: {verdict.reason}")
    return rfs


def test_root_is_a_writable_union_over_the_prototype(aufs: RootFS, prototype: str) -> None:
    with aufs.generated(prototype) as root:
        instance = os.path.dirname(root)
        assert filesystem_of(root) == ("aufs", root)
        with open(os.path.join(root, "etc/hostname"), "rb") as fh:
            assert fh.read() == b"prototype\n"
        with open(os.path.join(root, "etc/hostname"), "ab") as fh:  # copy-up
            fh.write(b"changed\n")
        with open(os.path.join(root, "new"), "wb") as fh:
            fh.write(b"new\n")
        os.unlink(os.path.join(root, "var/log.txt"))
        shutil.rmtree(os.path.join(root, "etc/deep"))
        assert not os.path.lexists(os.path.join(root, "var/log.txt"))
        assert not os.path.lexists(os.path.join(root, "etc/deep"))
        assert not any(name.startswith(".wh.") for name in os.listdir(os.path.join(root, "var")))
        assert os.path.isfile(os.path.join(instance, "rw/new"))
        assert os.path.lexists(os.path.join(instance, "rw/var/.wh.log.txt"))
        assert os.listdir(os.path.join(instance, "xino")) == []  # aufs unlinks its xino files
    # The prototype fixture checks the prototype did not change by a bit.


def test_instances_do_not_see_each_other(aufs: RootFS, prototype: str) -> None:
    with aufs.generated(prototype) as first, aufs.generated(prototype) as second:
        with open(os.path.join(first, "only-here"), "wb"):
            pass
        os.unlink(os.path.join(first, "etc/passwd"))
        assert not os.path.lexists(os.path.join(second, "only-here"))
        assert os.path.isfile(os.path.join(second, "etc/passwd"))


def test_remove_leaves_nothing(aufs: RootFS, prototype: str, base_dir: str) -> None:
    root = aufs.generate(prototype)
    with open(os.path.join(root, "file"), "wb") as fh:
        fh.write(b"x" * 4096)
    aufs.remove(root)
    assert instance_mounts(base_dir) == []
    assert aufs.instances() == []


def test_busybox_runs_in_the_root(aufs: RootFS, busybox_prototype: str) -> None:
    if shutil.which("chroot") is None:
        pytest.skip("no chroot(8) here")
    with aufs.generated(busybox_prototype) as root:
        script = "echo hi > /tmp/x && cat /tmp/x && rm /bin/ls && ! test -e /bin/ls"
        done = subprocess.run(
            ["chroot", root, "/bin/sh", "-c", script],
            capture_output=True,
            check=False,
        )
        assert (done.returncode, done.stdout) == (0, b"hi\n"), done.stderr
