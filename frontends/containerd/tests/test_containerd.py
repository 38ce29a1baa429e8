"""End to end with a real containerd (skipped where it is not installed):
a private containerd whose proxy plugin ``rootfs`` is a rootfs-snapshotter
subprocess; a two-layer OCI image imported, the snapshotter restarted, a
container run from it, and everything removed again."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator

import pytest
from conftest import drop_empty_layer
from rootfs_core import RootFS
from rootfs_core.sample import build_sample, find_busybox
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import mounts_below
from rootfs_core.testing.fixtures import remove_scratch, scratch_dir

from rootfs_containerd.testing import add_member, oci_archive, private_containerd_config

IMAGE = "docker.io/rootfs/e2e:latest"

pytestmark = pytest.mark.skipif(
    shutil.which("containerd") is None or shutil.which("ctr") is None,
    reason="containerd and ctr are not installed (apt-get install containerd)",
)


def _layer_one(tree: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(os.listdir(tree)):
            tar.add(os.path.join(tree, name), arcname=name)
        add_member(tar, "data", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "data/keep", b"kept\n")
        add_member(tar, "data/gone", b"deleted later\n")
        add_member(tar, "olddir", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "olddir/stale", b"stale\n")
        add_member(tar, "becomesfile", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "becomesfile/inner", b"inner\n")
    return buf.getvalue()


def _layer_two() -> bytes:
    """Deletes a file, replaces a directory by an opaque one and another by a file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add_member(tar, "data", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "data/.wh.gone")
        add_member(tar, "olddir", kind=tarfile.DIRTYPE, mode=0o755)
        add_member(tar, "olddir/.wh..wh..opq")
        add_member(tar, "olddir/fresh", b"fresh\n")
        add_member(tar, ".wh.becomesfile")
        add_member(tar, "becomesfile", b"now a file\n")
    return buf.getvalue()


def _wait_for(path: str, proc: subprocess.Popen[bytes], what: str, log: str) -> None:
    deadline = time.monotonic() + 30
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log, encoding="utf-8", errors="replace") as fh:
                pytest.fail(f"{what} did not start:\n{fh.read()[-3000:]}")
        time.sleep(0.05)


class Rig:
    def __init__(self, top: str, backend: str) -> None:
        self.top = top
        self.backend = backend
        self.base = os.path.join(top, "base")
        self.snap_sock = os.path.join(top, "snap.sock")
        self.sock = os.path.join(top, "containerd.sock")
        self.snapshotter: subprocess.Popen[bytes] | None = None
        self.containerd: subprocess.Popen[bytes] | None = None
        os.mkdir(self.base, 0o700)

    def start_snapshotter(self) -> None:
        log = os.path.join(self.top, "snapshotter.log")
        command = [sys.executable, "-m", "rootfs_containerd", "--address", self.snap_sock]
        command += ["--base-dir", self.base, "--backend", self.backend, "-v"]
        with open(log, "ab") as out:
            self.snapshotter = subprocess.Popen(command, stdout=out, stderr=out)
        _wait_for(self.snap_sock, self.snapshotter, "rootfs-snapshotter", log)

    def stop_snapshotter(self) -> None:
        if self.snapshotter is not None:
            self.snapshotter.send_signal(signal.SIGTERM)
            try:
                assert self.snapshotter.wait(60) == 0
            finally:
                if self.snapshotter.poll() is None:
                    self.snapshotter.kill()
                    self.snapshotter.wait()
            self.snapshotter = None

    def start_containerd(self) -> None:
        config = os.path.join(self.top, "config.toml")
        with open(config, "w", encoding="utf-8") as fh:
            fh.write(private_containerd_config(self.top, self.sock, self.snap_sock))
        log = os.path.join(self.top, "containerd.log")
        with open(log, "ab") as out:
            self.containerd = subprocess.Popen(["containerd", "--config", config], stdout=out, stderr=out)
        _wait_for(self.sock, self.containerd, "containerd", log)

    def stop_containerd(self) -> None:
        if self.containerd is not None:
            self.containerd.terminate()
            try:
                self.containerd.wait(30)
            except subprocess.TimeoutExpired:
                self.containerd.kill()
                self.containerd.wait()
            self.containerd = None

    def ctr(self, *args: str, timeout: float = 120) -> str:
        result = subprocess.run(
            ["ctr", "-a", self.sock, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        assert result.returncode == 0, f"ctr {' '.join(args)}: {result.stderr}\n{self.logs()}"
        return result.stdout

    def wait_for_reconnect(self, seconds: float = 20) -> None:
        """containerd's gRPC client to a proxy plugin fails the first calls
        after the snapshotter restarts ("connection closed: unavailable")
        until it has connected again: ask through it (Usage reaches the
        snapshotter; ls is answered from containerd's own database) until it
        answers."""
        deadline = time.monotonic() + seconds
        while True:
            result = subprocess.run(
                ["ctr", "-a", self.sock, "snapshots", "--snapshotter", "rootfs", "usage"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if result.returncode == 0:
                return
            assert time.monotonic() < deadline, f"containerd never reached it again: {result.stderr}"
            time.sleep(0.2)

    def logs(self) -> str:
        text = ""
        for name in ("snapshotter.log", "containerd.log"):
            try:
                with open(os.path.join(self.top, name), encoding="utf-8", errors="replace") as fh:
                    text += f"--- {name}\n{fh.read()[-4000:]}"
            except OSError:
                pass
        return text

    def unmount_all(self) -> None:
        """Whatever is still mounted below the rig (deepest first)."""
        for point in sorted(mounts_below(self.top), key=len, reverse=True):
            try:
                LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)
            except OSError:
                subprocess.run(["umount", "-l", point], check=False)


@pytest.fixture(params=["overlayfs", "fuse-overlayfs"])
def rig(request: pytest.FixtureRequest, leak_guard: None) -> Iterator[Rig]:
    name = str(request.param)
    top = scratch_dir("ctrd-")
    os.chmod(top, 0o711)
    status = {s.name: s for s in RootFS(os.path.join(top)).backends()}.get(name)
    if status is None or not status.supported:
        remove_scratch(top)
        pytest.skip(f"backend {name} is not supported here")
    if find_busybox() is None:
        remove_scratch(top)
        pytest.skip("busybox-static is not installed")
    rig = Rig(top, name)
    # containerd 1.6 keeps shim sockets, fifos and runc's state under
    # /run/containerd whatever its config says: empty directories it leaves.
    had_run_dir = os.path.exists(RUN_DIR)
    try:
        yield rig
    finally:
        rig.stop_containerd()
        rig.stop_snapshotter()
        rig.unmount_all()
        remove_scratch(top)
        if not had_run_dir:
            _remove_empty_dirs(RUN_DIR)


RUN_DIR = "/run/containerd"


def _remove_empty_dirs(path: str) -> None:
    """Empty directories only (rmdir, bottom up): never a file, never through a mount."""
    for parent, _dirs, _files in os.walk(path, topdown=False):
        try:
            os.rmdir(parent)
        except OSError:
            pass


def test_import_run_and_remove_an_image(rig: Rig) -> None:
    tree = os.path.join(rig.top, "busybox")
    build_sample(tree)
    image = os.path.join(rig.top, "image.tar")
    oci_archive(image, IMAGE, [_layer_one(tree), _layer_two()])
    rig.start_snapshotter()
    rig.start_containerd()
    rig.ctr("images", "import", "--snapshotter", "rootfs", image)
    assert IMAGE in rig.ctr("images", "ls", "-q")
    snapshots = rig.ctr("snapshots", "--snapshotter", "rootfs", "ls")
    assert snapshots.count("Committed") == 2, snapshots

    rig.stop_snapshotter()  # restarted between import and run
    rig.start_snapshotter()
    rig.wait_for_reconnect()

    script = (
        "cat /data/keep; ls /data; ls /olddir; cat /becomesfile; "
        "echo written > /tmp/new && cat /tmp/new; busybox | head -1 >/dev/null && echo ok"
    )
    out = rig.ctr("run", "--rm", "--snapshotter", "rootfs", IMAGE, "e2e", "/bin/sh", "-c", script)
    assert out.split() == ["kept", "keep", "fresh", "now", "a", "file", "written", "ok"], out + rig.logs()
    usage = rig.ctr("snapshots", "--snapshotter", "rootfs", "usage")
    assert "sha256:" in usage

    rig.ctr("images", "rm", "--sync", IMAGE)
    left = rig.ctr("snapshots", "--snapshotter", "rootfs", "ls").split("\n")[1:]
    keys = [line.split()[0] for line in left if line.strip()]
    # Children first: each is removed before its parent.
    for _ in range(len(keys)):
        for key in list(keys):
            listing = rig.ctr("snapshots", "--snapshotter", "rootfs", "ls")
            if any(line.split()[1:2] == [key] for line in listing.splitlines()[1:] if line.strip()):
                continue
            rig.ctr("snapshots", "--snapshotter", "rootfs", "rm", key)
            keys.remove(key)
    assert rig.ctr("snapshots", "--snapshotter", "rootfs", "ls").strip().splitlines()[1:] == []
    rig.stop_containerd()
    rig.stop_snapshotter()
    rfs = RootFS(rig.base)
    assert rfs.instances() == []
    assert len(rfs.layers()) == 1  # the empty layer alone
    drop_empty_layer(rig.base)
    assert rfs.layers() == []
