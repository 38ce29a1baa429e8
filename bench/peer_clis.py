"""The peers of item 7: how containerd (through ``ctr``), podman and buildah
each make a writable root from the prototype, mount it and remove it, from
their command lines, each with all its state in a directory of its own
below the run's.

A peer is two halves, so that the report can set each beside rootfs's
generate and remove: ``generate`` makes and mounts a root and returns its
handle, ``remove`` unmounts and deletes it. ``start`` brings the peer up,
puts the prototype into its store and checks one cycle really mounts and
unmounts (none of it timed); ``close`` stops whatever it started and
returns the mounts its own commands left below its directory, unmounted
then, so that the run's final check speaks of rootfs alone.
"""

from __future__ import annotations

import abc
import importlib.util
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from typing import Any, ClassVar

import hygiene
from measure import command

IMAGE = "localhost/rootfs-bench:prototype"  # fully qualified: no registry is ever asked


class Peer(abc.ABC):
    """One peer, its state under ``top``, generating from ``prototype``."""

    program: ClassVar[str]
    cycle: ClassVar[str]  # the whole cycle, as the table names it
    making: ClassVar[str]  # what ``generate`` runs
    removing: ClassVar[str]  # what ``remove`` runs

    def __init__(self, top: str, prototype: str) -> None:
        self.top = top
        self.prototype = prototype
        self.mounted = ""  # the root the last generate mounted

    @classmethod
    def missing(cls) -> str | None:
        """Why this peer cannot be measured here, or None."""
        return None if shutil.which(cls.program) else f"{cls.program} is not installed"

    def start(self) -> None:
        """Set up, then one cycle that must mount and unmount for real: a
        peer that answered without mounting would look fast."""
        os.makedirs(self.top)
        self.setup()
        handle = self.generate()
        try:
            if os.path.realpath(self.mounted) not in hygiene.mounts_below(self.mounted):
                raise RuntimeError(f"{self.program}: {self.mounted} is not a mount point after {self.making}")
        finally:
            self.remove(handle)
        if hygiene.mounts_below(self.mounted):
            raise RuntimeError(f"{self.program}: {self.mounted} is still mounted after {self.removing}")

    @abc.abstractmethod
    def setup(self) -> None:
        """Start what the peer needs and put the prototype into its store."""

    @abc.abstractmethod
    def generate(self) -> str: ...

    @abc.abstractmethod
    def remove(self, handle: str) -> None: ...

    def version(self) -> str:
        return command([self.program, "--version"])[1]

    def detail(self) -> str:
        """What the table should add about how this peer's numbers came about."""
        return ""

    def close(self) -> list[str]:
        """Stop what ``setup`` started; return the mounts left below ``top``, unmounted now."""
        left = hygiene.mounts_below(self.top)
        hygiene.unmount_all_below(self.top)
        return left

    def copy_prototype(self, into: str) -> None:
        subprocess.run(["cp", "-a", "--", f"{self.prototype}/.", into], check=True, stdin=subprocess.DEVNULL)


class Ctr(Peer):
    """containerd's own overlayfs snapshotter through ``ctr snapshots``, on a
    containerd of its own (``rootfs_containerd.testing``'s private
    configuration: root, state and sockets under ``top``).

    The prototype is committed once as the snapshot ``prototype``; a cycle
    is ``prepare`` of a child of it and ``mounts``, whose printed mount
    command is done with mount(2) as containerd itself mounts
    (bench/containerd.py's ``mount``: no mount(8) process is counted), then
    umount2 and ``rm``. ``rm`` deletes the snapshot from containerd's
    metadata; its directories go later, in containerd's garbage collection,
    outside the timed calls, where rootfs's remove has deleted everything
    when it returns.
    """

    program = "ctr"
    cycle = "ctr snapshots prepare+mounts+rm (overlayfs)"
    making = "ctr snapshots prepare+mounts, mount(2)"
    removing = "umount2, ctr snapshots rm"
    NAMESPACE = "rootfs-bench"
    PARENT = "prototype"

    def __init__(self, top: str, prototype: str) -> None:
        super().__init__(top, prototype)
        self.sock = f"{top}/containerd.sock"
        self.mounted = f"{top}/mnt"
        self.daemon: subprocess.Popen[bytes] | None = None
        self.serial = 0
        self._mount: Callable[[Any, str], None]
        self._unmount: Callable[[str], None]
        self._mount_type: Callable[..., Any]

    @classmethod
    def missing(cls) -> str | None:
        for program in ("ctr", "containerd"):
            if shutil.which(program) is None:
                return f"{program} is not installed"
        if importlib.util.find_spec("rootfs_containerd") is None:
            return "rootfs-containerd is not installed (its private containerd configuration and mount type)"
        return None

    def _ctr(self, *args: str) -> str:
        argv = ["ctr", "--address", self.sock, "--namespace", self.NAMESPACE]
        return command([*argv, "snapshots", "--snapshotter", "overlayfs", *args])[1]

    def setup(self) -> None:
        # Here, not at the top: bench/containerd.py needs rootfs-containerd and
        # its grpc, which a run without this peer does without.
        import containerd
        from rootfs_containerd.api.mount_pb2 import Mount
        from rootfs_containerd.testing import private_containerd_config

        self._mount, self._unmount, self._mount_type = containerd.mount, containerd.unmount, Mount
        os.mkdir(self.mounted)
        config = f"{self.top}/config.toml"
        with open(config, "w", encoding="utf-8") as fh:
            # Its proxy plugin ``rootfs`` names a socket nobody serves: ctr asks for overlayfs only.
            fh.write(private_containerd_config(self.top, self.sock, f"{self.top}/unused.sock"))
        log_path = f"{self.top}/containerd.log"
        with open(log_path, "ab") as log:
            self.daemon = subprocess.Popen(
                ["containerd", "--config", config], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                self._ctr("list")
                break
            except RuntimeError as exc:
                if self.daemon.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                with open(log_path, encoding="utf-8", errors="replace") as fh:
                    raise RuntimeError(f"containerd did not start ({exc}):\n{fh.read()[-2000:]}") from None
        self._ctr("prepare", "prototype-active")
        self._mount(self._mounts("prototype-active"), self.mounted)
        try:
            self.copy_prototype(self.mounted)
        finally:
            self._unmount(self.mounted)
        self._ctr("commit", self.PARENT, "prototype-active")

    def _mounts(self, key: str) -> Any:
        """What ``ctr snapshots mounts`` prints (``mount -t TYPE SOURCE TARGET
        -o OPTIONS``), as the containerd mount it describes."""
        printed = self._ctr("mounts", self.mounted, key).splitlines()
        words = shlex.split(printed[0]) if len(printed) == 1 else []
        if len(words) != 7 or words[:2] != ["mount", "-t"] or words[5] != "-o":
            raise RuntimeError(f"ctr snapshots mounts printed {printed!r}, not one mount command")
        return self._mount_type(type=words[2], source=words[3], options=words[6].split(","))

    def generate(self) -> str:
        self.serial += 1
        key = f"root-{self.serial}"
        self._ctr("prepare", key, self.PARENT)
        self._mount(self._mounts(key), self.mounted)
        return key

    def remove(self, handle: str) -> None:
        self._unmount(self.mounted)
        self._ctr("rm", handle)

    def detail(self) -> str:
        snapshots = f"{self.top}/root/io.containerd.snapshotter.v1.overlayfs/snapshots"
        pending = len(os.listdir(snapshots)) - 1  # all but the prototype's
        return f"containerd's GC deletes a removed snapshot later: {pending} not yet deleted at the end"

    def close(self) -> list[str]:
        if self.daemon is not None:
            self.daemon.terminate()
            try:
                self.daemon.wait(30)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
        return super().close()


class _ContainersStorage(Peer):
    """podman and buildah keep images and containers in containers/storage:
    here one of their own under ``top`` with the overlay driver, so that the
    host's store is neither read nor changed, and the prototype in it as the
    image ``IMAGE``. Every command's last line of output is its answer (a
    container's id or name, a mount point)."""

    def options(self) -> list[str]:
        """Global options besides the store's."""
        return []

    def run(self, *args: str) -> str:
        store = [
            "--root",
            f"{self.top}/storage",
            "--runroot",
            f"{self.top}/run",
            "--storage-driver",
            "overlay",
        ]
        env = os.environ | {"TMPDIR": f"{self.top}/tmp"}  # image imports and commits stage files there
        lines = command([self.program, *store, *self.options(), *args], env)[1].splitlines()
        return lines[-1] if lines else ""

    def setup(self) -> None:
        os.mkdir(f"{self.top}/tmp")
        self.store_prototype()

    @abc.abstractmethod
    def store_prototype(self) -> None: ...


class Podman(_ContainersStorage):
    """``podman create`` (with a command: the image has none) and ``podman
    mount``, then ``podman rm --force``, which unmounts as it removes. The
    image is ``podman import`` of a tar of the prototype. Events, cgroups,
    network configuration and podman's own temporary state are kept off
    the host."""

    program = "podman"
    cycle = "podman create+mount+rm"
    making = "podman create+mount"
    removing = "podman rm -f"

    def options(self) -> list[str]:
        return [
            *("--tmpdir", f"{self.top}/libpod", "--network-config-dir", f"{self.top}/networks"),
            *("--events-backend", "none", "--cgroup-manager", "cgroupfs"),
        ]

    def store_prototype(self) -> None:
        tar = f"{self.top}/prototype.tar"
        subprocess.run(
            ["tar", "--numeric-owner", "-C", self.prototype, "-cf", tar, "."],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        self.run("import", tar, IMAGE)
        os.unlink(tar)

    def generate(self) -> str:
        container = self.run("create", "--network", "none", IMAGE, "/bin/sh")
        self.mounted = self.run("mount", container)
        return container

    def remove(self, handle: str) -> None:
        self.run("rm", "--force", handle)


class Buildah(_ContainersStorage):
    """``buildah from`` and ``buildah mount``, then ``buildah rm``, which
    unmounts as it removes. The image is a working container ``from
    scratch`` with the prototype copied in (``cp -a`` into its mount),
    committed."""

    program = "buildah"
    cycle = "buildah from+mount+rm"
    making = "buildah from+mount"
    removing = "buildah rm"

    def store_prototype(self) -> None:
        working = self.run("from", "scratch")
        self.copy_prototype(self.run("mount", working))
        self.run("umount", working)
        self.run("commit", working, IMAGE)
        self.run("rm", working)

    def generate(self) -> str:
        container = self.run("from", IMAGE)
        self.mounted = self.run("mount", container)
        return container

    def remove(self, handle: str) -> None:
        self.run("rm", handle)
