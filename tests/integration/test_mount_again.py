"""``rootfs mount``: an instance whose mounts a reboot took is mounted
again from its journal, with what was written in it; one whose writable
layer lived on a tmpfs of its own says so; a killed attempt is undone by
unmounting, never by deleting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pytest
from integration_support import run_cli, text

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts

MakePrototype = Callable[..., str]


def reboot(base: str) -> None:
    """What a reboot does to an instance: every mount gone (a FUSE daemon
    with its mount), the directories and records left."""
    for point in sorted(instance_mounts(base), key=len, reverse=True):
        if LinuxSyscalls().is_mountpoint(point):
            LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)


def _view(root: str) -> dict[str, tuple[int, bytes]]:
    """Every name in the root with its mode and, for a file, its content
    (times are left out: fuse-overlayfs's attribute cache lags)."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            st = os.lstat(path)
            content = b""
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as fh:
                    content = fh.read()
            found[os.path.relpath(path, root)] = (st.st_mode, content)
    return found


@pytest.fixture(params=["overlayfs", "quilt", "fuse-overlayfs"])
def name(request: pytest.FixtureRequest, base_dir: str) -> str:
    backend: str = request.param
    probe = RootFS(base_dir, backend=backend).probe(backend)
    if not probe.supported:
        if backend != "fuse-overlayfs":
            pytest.fail(f"{backend} must work here: {probe.reason}")
        pytest.skip(f"{backend} is not supported here: {probe.reason}")
    return backend


def test_an_unmounted_instance_is_mounted_again_with_its_data(
    base_dir: str, make_prototype: MakePrototype, name: str
) -> None:
    prototype = make_prototype()
    rfs = RootFS(base_dir, backend=name)
    root = rfs.generate(prototype)
    with open(os.path.join(root, "etc", "written"), "w") as fh:
        fh.write("before the reboot\n")
    before = _view(root)
    mounts = instance_mounts(base_dir)
    reboot(base_dir)
    assert [i.state for i in RootFS(base_dir).instances()] == ["unmounted"]
    proc = run_cli(base_dir, "mount", root)
    assert proc.returncode == 0, text(proc.stderr)
    assert text(proc.stdout).strip() == root
    assert [i.state for i in rfs.instances()] == ["ready"]
    assert instance_mounts(base_dir) == mounts
    assert _view(root) == before
    with open(os.path.join(root, "etc", "after"), "w") as fh:
        fh.write("after\n")  # writable again
    assert rfs.mount(root) == root  # a mounted one is left as it is
    assert rfs.remove(root) is True


def test_a_writable_layer_a_reboot_emptied_is_said_lost(base_dir: str, make_prototype: MakePrototype) -> None:
    rfs = RootFS(base_dir, backend="overlayfs")
    root = rfs.generate(make_prototype(), size="8M")
    reboot(base_dir)
    with pytest.raises(RootFSError) as info:
        rfs.mount(root)
    assert info.value.error_id is ErrorId.ErrLayerLost
    assert instance_mounts(base_dir) == []  # the fresh tmpfs it tried is gone again
    assert [i.state for i in rfs.instances()] == ["unmounted"]
    assert rfs.remove(root) is True


def test_a_killed_mount_again_is_undone_by_unmounting(base_dir: str, make_prototype: MakePrototype) -> None:
    rfs = RootFS(base_dir, backend="quilt")
    root = rfs.generate(make_prototype())
    with open(os.path.join(root, "var", "written"), "w") as fh:
        fh.write("kept\n")
    reboot(base_dir)
    code = (
        "import os, signal\n"
        "from rootfs_core import RootFS\n"
        "from rootfs_core.context import BuildContext\n"
        "real = BuildContext.bind\n"
        "def bind(self, *a, **k):\n"
        "    real(self, *a, **k)\n"
        "    if self.remounted[1:]:\n"  # the root and one writable copy mounted again
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "BuildContext.bind = bind\n"
        f"RootFS({base_dir!r}).mount({root!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], check=False, cwd="/")
    assert proc.returncode == -signal.SIGKILL
    assert RootFS(base_dir, sweep=False).gc().failed == {}
    [instance] = RootFS(base_dir).instances()
    assert instance.state == "unmounted" and instance_mounts(base_dir) == []
    assert rfs.mount(root) == root
    with open(os.path.join(root, "var", "written")) as fh:
        assert fh.read() == "kept\n"
    assert rfs.remove(root) is True
