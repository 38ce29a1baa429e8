"""What a snapshot cycle costs through containerd: rootfs-snapshotter (the
proxy plugin) beside containerd's own overlayfs snapshotter, in one run.

    unshare -m --propagation private python bench/containerd.py
    unshare -m --propagation private python bench/containerd.py --reps 20 --json

A private containerd (root, state and sockets under a temporary directory,
the proxy plugin ``rootfs`` in its config) and ``rootfs-snapshotter
--backend overlayfs`` (its defaults otherwise: roots made ahead on) run as
subprocesses. Each snapshotter first gets an image: one committed snapshot
holding the sample prototype, made through the API as an unpack makes a
layer. One warm gRPC client to containerd's socket
(``containerd.services.snapshots.v1.Snapshots``, header
``containerd-namespace: bench``) then times, interleaved (which goes first
alternates), the cycle Prepare(key, parent) -> mount what it returned ->
unmount -> Remove(key), with snapshotter ``overlayfs`` and ``rootfs``:

- over the image (the target: a container's snapshot): overlayfs returns an
  overlay (lowerdir the image's directory) that the client mounts; rootfs
  the bind of the root it mounted;
- with no parent (reported): overlayfs returns a bind of an empty directory,
  rootfs the bind of a root over its empty layer.

The same cycle over an image goes, interleaved with those two, through a
third proxy plugin: ``bench/null_snapshotter.py``, served as rootfs-snapshotter
is (grpcio, the same stubs) but doing no work at all (every Prepare is a
bind of one directory). Its cycle is the floor under any snapshotter served
by Python through containerd's proxy: null/overlayfs says what the proxy
design costs (or saves) against the native snapshotter, rootfs/null what
rootfs's own work adds.

Then, on its own, the cycle over an image on the socket of a second
rootfs-snapshotter (a base directory of its own) that containerd does not
know, so nothing is in between. (Not the proxied one's socket: containerd's
collector deletes whatever it finds there that it did not make.)

Through containerd, Remove deletes the snapshot from containerd's metadata
only: the snapshotter's own removal happens later, in containerd's garbage
collection (scheduled after mutations; for a proxy it ends with a Cleanup
call), outside the timed calls but on the same machine while they run, so
it shows in the spread (p90, max) rather than in the medians, and a
collection holds up the next Prepare of its snapshotter while it runs.
rootfs-snapshotter deletes after its Remove has replied (in a helper
process, at a lower CPU priority), so a deletion falls in whichever timed
calls follow, the native ones too: the interleaved medians are latencies,
not the whole cost. The **CPU**
cost runs each snapshotter's cycle over the image alone, in blocks of
back-to-back cycles (blocks alternate between the two), each block until
what it made is deleted on disk again (containerd's overlayfs snapshot
directories, rootfs's instance directories but as many roots made ahead as
before the block; a synchronous collection, ``ctr leases delete --sync``,
makes sure it runs): the CPU time containerd, the proxied
rootfs-snapshotter (its helper processes included) and this process used,
per cycle. What the collector had not yet removed at the end is reported
(and removed).
The snapshots carry ``containerd.io/gc.root``: unreferenced (no lease), the
collector could take one between its Prepare and its Remove.

Medians, and the ratios rootfs/overlayfs through containerd. Nothing is
asserted; both daemons are stopped, everything mounted below the temporary
directory is unmounted, and it is deleted only once nothing is mounted below
it. containerd 1.6 makes ``/run/containerd/...`` whatever its
configuration: those directories are removed again (empty ones only) if
they were not there. ``--dir DIR`` makes the temporary directory under DIR
(a tmpfs, say): the filesystem decides what a ``mkdir`` and the upper's
sync at an overlay's unmount cost, which the native snapshotter pays in its
timed calls. The report names it.

Then ``ctr run --rm IMAGE ID /bin/true`` with ``--snapshotter rootfs`` and
``--snapshotter overlayfs``, interleaved (which goes first alternates), the
wall time of each ``ctr`` process: a one-layer image of the sample
prototype's busybox tree, written by hand and imported for each snapshotter
(skipped without busybox-static). Medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

import grpc
import hygiene
from rawops import LIBC, MS_BIND, MS_RDONLY, MS_REMOUNT, UMOUNT_NOFOLLOW
from rootfs_containerd.api import snapshots_pb2, snapshots_pb2_grpc
from rootfs_containerd.testing import oci_archive, private_containerd_config, tree_layer

from rootfs_core.sample import build_sample, find_busybox

NAMESPACE = "bench"
IMAGE = "docker.io/rootfs/bench:latest"
RUN_DIR = "/run/containerd"
MS_REC = 0x4000
# containerd's mount options that are flags (mount/mount_linux.go); the rest is data.
FLAGS: dict[str, tuple[bool, int]] = {
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "bind": (False, MS_BIND),
    "rbind": (False, MS_BIND | MS_REC),
    "nosuid": (False, 0x2),
    "suid": (True, 0x2),
    "nodev": (False, 0x4),
    "dev": (True, 0x4),
    "noexec": (False, 0x8),
    "exec": (True, 0x8),
    "sync": (False, 0x10),
    "async": (True, 0x10),
    "dirsync": (False, 0x80),
    "noatime": (False, 0x400),
    "nodiratime": (False, 0x800),
    "relatime": (False, 0x200000),
    "strictatime": (False, 0x1000000),
}


def mount(m: Any, target: str) -> None:
    """One containerd ``types.Mount`` on ``target``, with mount(2), as
    containerd's ``mount.Mount.Mount`` does (a read-only bind: bind, then remount)."""
    flags, data = 0, []
    for option in m.options:
        if option in FLAGS:
            clear, bit = FLAGS[option]
            flags = flags & ~bit if clear else flags | bit
        else:
            data.append(option)
    fstype = None if flags & MS_BIND else m.type.encode()
    payload = ",".join(data).encode() if data else None
    LIBC.mount(os.fsencode(m.source), os.fsencode(target), fstype, flags, payload)
    if flags & MS_BIND and flags & MS_RDONLY:
        LIBC.mount(b"", os.fsencode(target), None, (flags & ~MS_REC) | MS_REMOUNT, None)


def unmount(target: str) -> None:
    try:
        LIBC.umount(os.fsencode(target), UMOUNT_NOFOLLOW)
    except OSError:  # an rbind that brought submounts: deepest first
        left = hygiene.unmount_all_below(target)
        if left:
            raise RuntimeError(f"still mounted: {left}") from None


class Daemons:
    """The snapshotter and containerd, as subprocesses, everything under ``top``."""

    def __init__(
        self, top: str, compare: list[str] | None = None, compare_env: dict[str, str] | None = None
    ) -> None:
        self.top = top
        self.compare = compare  # a second proxied snapshotter's extra arguments (or None)
        self.compare_env = compare_env or {}  # and what its environment has more
        self.base = os.path.join(top, "base")
        self.snap_sock = os.path.join(top, "snap.sock")
        self.direct_base = os.path.join(top, "direct-base")
        self.direct_sock = os.path.join(top, "direct.sock")
        self.b_base = os.path.join(top, "b-base")
        self.b_sock = os.path.join(top, "b.sock")
        self.null_dir = os.path.join(top, "null-dir")
        self.null_sock = os.path.join(top, "null.sock")
        self.sock = os.path.join(top, "containerd.sock")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        os.mkdir(self.base, 0o700)
        os.mkdir(self.direct_base, 0o700)
        os.mkdir(self.b_base, 0o700)
        os.mkdir(self.null_dir, 0o755)

    def _start(self, name: str, command: list[str], socket: str, env: dict[str, str] | None = None) -> None:
        log = os.path.join(self.top, f"{name}.log")
        environ = {**os.environ, **env} if env else None
        with open(log, "ab") as out:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=environ)
        self.procs[name] = proc
        deadline = time.monotonic() + 30
        while not os.path.exists(socket):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{self.log(name)}")
            time.sleep(0.02)

    def log(self, name: str, *, tail: bool = True) -> str:
        try:
            with open(os.path.join(self.top, f"{name}.log"), encoding="utf-8", errors="replace") as fh:
                text = fh.read()
                return text[-3000:] if tail else text
        except OSError:
            return ""

    def start(self) -> None:
        script = shutil.which("rootfs-snapshotter")
        program = [script] if script else [sys.executable, "-m", "rootfs_containerd"]
        started: list[tuple[str, str, str, list[str]]] = [
            ("snapshotter", self.snap_sock, self.base, []),
            ("direct", self.direct_sock, self.direct_base, []),
        ]
        if self.compare is not None:
            started.append(("b", self.b_sock, self.b_base, self.compare))
        for name, sock, base, extra in started:
            command = [*program, "--address", sock, "--base-dir", base, "--backend", "overlayfs", *extra]
            self._start(name, command, sock, self.compare_env if name == "b" else None)
        null = [sys.executable, os.path.join(os.path.dirname(__file__), "null_snapshotter.py")]
        self._start("null", [*null, "--address", self.null_sock, "--dir", self.null_dir], self.null_sock)
        config = os.path.join(self.top, "config.toml")
        with open(config, "w", encoding="utf-8") as fh:
            fh.write(private_containerd_config(self.top, self.sock, self.snap_sock))
            fh.write(f'[proxy_plugins.null]\n  type = "snapshot"\n  address = "{self.null_sock}"\n')
            if self.compare is not None:
                fh.write(f'[proxy_plugins.rootfsb]\n  type = "snapshot"\n  address = "{self.b_sock}"\n')
        self._start("containerd", ["containerd", "--config", config], self.sock)

    def stop(self, names: tuple[str, ...] = ("containerd", "snapshotter", "direct", "b", "null")) -> None:
        """containerd first (it is the snapshotter's client), then the snapshotters."""
        for name in names:
            grace = 30 if name == "containerd" else 60
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


class Cycle:
    """Prepare -> mount -> unmount -> Remove, timed in its three parts."""

    def __init__(
        self, stub: Any, snapshotter: str, prefix: str, target: str, with_namespace: bool, parent: str = ""
    ) -> None:
        self.stub = stub
        self.snapshotter = snapshotter
        self.prefix = prefix
        self.target = target
        self.parent = parent
        self.metadata = (("containerd-namespace", NAMESPACE),) if with_namespace else ()
        # Without a lease or this label, containerd's collector may take the
        # snapshot between Prepare and Remove (it is referenced by nothing).
        self.labels = {"containerd.io/gc.root": "bench"} if with_namespace else {}
        self.serial = 0
        self.times: dict[str, list[float]] = {"prepare": [], "mount": [], "remove": [], "total": []}

    def run(self, *, record: bool = True, check: bool = False) -> None:
        self.serial += 1
        key = f"{self.prefix}-{self.serial}"
        md = self.metadata
        t0 = time.perf_counter()
        reply = self.stub.Prepare(
            snapshots_pb2.PrepareSnapshotRequest(
                snapshotter=self.snapshotter, key=key, parent=self.parent, labels=self.labels
            ),
            metadata=md,
        )
        t1 = time.perf_counter()
        if len(reply.mounts) != 1:
            raise RuntimeError(f"{self.snapshotter}: expected one mount, got {list(reply.mounts)}")
        mount(reply.mounts[0], self.target)
        if check and self.target not in hygiene.mounts_below(self.target):
            raise RuntimeError(f"{self.snapshotter}: {self.target} is not a mount point")
        unmount(self.target)
        t2 = time.perf_counter()
        request = snapshots_pb2.RemoveSnapshotRequest(snapshotter=self.snapshotter, key=key)
        self.stub.Remove(request, metadata=md)
        t3 = time.perf_counter()
        if record:
            for part, seconds in (("prepare", t1 - t0), ("mount", t2 - t1), ("remove", t3 - t2)):
                self.times[part].append(seconds)
            self.times["total"].append(t3 - t0)

    def warm(self, seconds: float = 20) -> None:
        """One untimed cycle, retried while containerd has not yet reached the proxy plugin."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                self.run(record=False, check=True)
                return
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def medians(self) -> dict[str, float]:
        found = {f"{part}_ms": statistics.median(values) * 1e3 for part, values in self.times.items()}
        found["total_p90_ms"] = statistics.quantiles(self.times["total"], n=10)[-1] * 1e3
        found["total_max_ms"] = max(self.times["total"]) * 1e3
        return found


def make_image(stub: Any, snapshotter: str, tree: str, target: str, *, with_namespace: bool) -> str:
    """The image every timed cycle of ``snapshotter`` stacks on: one committed
    snapshot holding ``tree``, made through the snapshots API as an unpack
    makes a layer (Prepare, mount, write, unmount, Commit); returns its name."""
    metadata = (("containerd-namespace", NAMESPACE),) if with_namespace else ()
    labels = {"containerd.io/gc.root": "bench"} if with_namespace else {}
    key, name = f"image-unpack-{snapshotter or 'direct'}", f"image-{snapshotter or 'direct'}"
    reply = stub.Prepare(
        snapshots_pb2.PrepareSnapshotRequest(snapshotter=snapshotter, key=key, labels=labels),
        metadata=metadata,
    )
    mount(reply.mounts[0], target)
    try:
        # cp -a recreates device nodes and keeps links, owners and modes
        subprocess.run(["cp", "-a", f"{tree}/.", target], check=True)
    finally:
        unmount(target)
    stub.Commit(
        snapshots_pb2.CommitSnapshotRequest(snapshotter=snapshotter, name=name, key=key, labels=labels),
        metadata=metadata,
    )
    return name


def native_dirs(daemons: Daemons) -> list[str]:
    """What containerd's overlayfs snapshotter keeps on disk: a directory per snapshot."""
    found = os.path.join(daemons.top, "root", "io.containerd.snapshotter.v1.overlayfs", "snapshots")
    return os.listdir(found) if os.path.isdir(found) else []


def rootfs_dirs(daemons: Daemons) -> list[str]:
    """rootfs's instance directories in the proxied snapshotter's base directory."""
    return [name for name in os.listdir(daemons.base) if not name.startswith(".")]


def on_disk(daemons: Daemons) -> set[str]:
    """The snapshot directories of both snapshotters, told apart."""
    return {f"overlayfs/{name}" for name in native_dirs(daemons)} | {
        f"rootfs/{name}" for name in rootfs_dirs(daemons)
    }


def settle(daemons: Daemons, kept: set[str], spares: int | None = 0, seconds: float = 30) -> int:
    """A synchronous collection, then wait until both snapshotters have
    deleted on disk what the cycles made: all but ``kept`` (the images) and,
    of rootfs's, ``spares`` instances (the roots it keeps made ahead; None:
    as many as are left once their number holds for 0.2 s). Returns how many
    of rootfs's are left."""
    lease = ctr(daemons, "leases", "create").split()[0]
    ctr(daemons, "leases", "delete", "--sync", lease)
    deadline = time.monotonic() + seconds
    last, since = -1, time.monotonic()
    while True:
        left = on_disk(daemons) - kept
        count = sum(name.startswith("rootfs/") for name in left)
        if count != last:
            last, since = count, time.monotonic()
        if count == len(left) and (count <= spares if spares is not None else time.monotonic() - since > 0.2):
            return count
        if time.monotonic() > deadline:
            raise RuntimeError(f"still on disk after {seconds} s: {sorted(left)}")
        time.sleep(0.002)


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command's name (state first)."""
    with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
        return fh.read().rsplit(")", 1)[1].split()


def cpu_seconds(daemons: Daemons) -> float:
    """CPU time used so far by containerd, the proxied snapshotter (its
    helper processes included) and this process."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    total = used.ru_utime + used.ru_stime
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents[int(entry)] = int(_stat(int(entry))[1])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
    counted = {daemons.procs[name].pid for name in ("containerd", "snapshotter")}
    while True:  # and their descendants
        more = {pid for pid, parent in parents.items() if parent in counted} - counted
        if not more:
            break
        counted |= more
    for pid in counted:
        try:
            fields = _stat(pid)
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def cpu_per_cycle(
    daemons: Daemons, cycles: dict[str, Cycle], count: int, blocks: int, kept: set[str]
) -> dict[str, Any]:
    """Per cycle, the CPU time of ``count`` back-to-back cycles of one
    snapshotter (over the image) and of deleting what they made; ``blocks``
    blocks each, alternating."""
    times: dict[str, list[float]] = {"overlayfs": [], "rootfs": []}
    for block in range(blocks):
        for name in times if block % 2 else reversed(times):
            spares = settle(daemons, kept, None)
            before = cpu_seconds(daemons)
            for _ in range(count):
                cycles[f"{name}_image"].run(record=False)
            settle(daemons, kept, spares)  # the spare taken was made again
            times[name].append((cpu_seconds(daemons) - before) / count)
    found: dict[str, Any] = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    found["rootfs_vs_overlayfs"] = found["rootfs"] / found["overlayfs"]
    return found


def leftovers(daemons: Daemons, proxied: Any, kept: set[str]) -> dict[str, int]:
    """Snapshots containerd's collector had not yet removed from each snapshotter
    (the images aside); rootfs's are removed now, the image last (through the
    snapshotter, mounts and all), once containerd is stopped: its collector
    removes nothing more behind us."""
    daemons.stop(("containerd",))
    native = len(set(native_dirs(daemons)) - {name.split("/", 1)[1] for name in kept})
    infos = [i for reply in proxied.List(snapshots_pb2.ListSnapshotsRequest()) for i in reply.info]
    keys = sorted((i.name for i in infos), key=lambda k: k.startswith("image-"))  # children first
    pending = sum(not k.startswith("image-") for k in keys)
    deadline = time.monotonic() + 30
    for key in keys:
        while True:  # a removal containerd started may still be finishing
            try:
                proxied.Remove(snapshots_pb2.RemoveSnapshotRequest(key=key))
                break
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.NOT_FOUND:
                    break
                if exc.code() != grpc.StatusCode.FAILED_PRECONDITION or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
    # each collection that removed something of rootfs's ends with a Cleanup;
    # one that reconciles (start-up's aside) is logged at INFO as "cleanup: {...}"
    cleanups = daemons.log("snapshotter", tail=False).count("rootfs_containerd.grpc: cleanup:")
    return {"overlayfs": native, "rootfs": pending, "rootfs_reconciling_cleanups": cleanups}


def ctr(daemons: Daemons, *args: str) -> str:
    command = ["ctr", "-a", daemons.sock, "-n", NAMESPACE, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {done.stderr.strip()}")
    return done.stdout


def ctr_runs(daemons: Daemons, reps: int) -> dict[str, Any]:
    """``ctr run --rm IMAGE ID /bin/true`` with each snapshotter, interleaved
    (one untimed run each first); the image is removed again after."""
    tree = os.path.join(daemons.top, "busybox")
    build_sample(tree)
    image = os.path.join(daemons.top, "image.tar")
    oci_archive(image, IMAGE, [tree_layer(tree)])
    names = ("overlayfs", "rootfs")
    for name in names:
        ctr(daemons, "images", "import", "--snapshotter", name, image)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps + 1):
        for name in names if rep % 2 else reversed(names):
            start = time.perf_counter()
            ctr(daemons, "run", "--rm", "--snapshotter", name, IMAGE, f"{name}-{rep}", "/bin/true")
            if rep:
                times[name].append(time.perf_counter() - start)
    ctr(daemons, "images", "rm", "--sync", IMAGE)
    found: dict[str, Any] = {
        name: {
            "median_ms": statistics.median(values) * 1e3,
            "p90_ms": statistics.quantiles(values, n=10)[-1] * 1e3,
        }
        for name, values in times.items()
    }
    found["rootfs_vs_overlayfs"] = found["rootfs"]["median_ms"] / found["overlayfs"]["median_ms"]
    return found


def measure(daemons: Daemons, reps: int, block: int, runs: int, target: str) -> dict[str, Any]:
    with (
        grpc.insecure_channel("unix:" + daemons.sock) as channel,
        grpc.insecure_channel("unix:" + daemons.snap_sock) as snap_channel,
        grpc.insecure_channel("unix:" + daemons.direct_sock) as direct_channel,
    ):
        stub = snapshots_pb2_grpc.SnapshotsStub(channel)
        direct = snapshots_pb2_grpc.SnapshotsStub(direct_channel)
        bare = {
            "overlayfs": Cycle(stub, "overlayfs", "native", target, True),
            "rootfs": Cycle(stub, "rootfs", "proxied", target, True),
        }
        for cycle in bare.values():
            cycle.warm()  # also waits for containerd to reach the proxy
        tree = os.path.join(daemons.top, "image-tree")
        build_sample(tree)
        images = {name: make_image(stub, name, tree, target, with_namespace=True) for name in bare}
        kept = on_disk(daemons)  # the images' directories
        direct_image = make_image(direct, "", tree, target, with_namespace=False)
        cycles = {
            "overlayfs_image": Cycle(stub, "overlayfs", "native-i", target, True, images["overlayfs"]),
            "rootfs_image": Cycle(stub, "rootfs", "proxied-i", target, True, images["rootfs"]),
            **bare,
            "rootfs_direct": Cycle(direct, "", "direct", target, False, direct_image),
        }
        Cycle(stub, "null", "null-w", target, True).warm()
        null_image = make_image(stub, "null", tree, target, with_namespace=True)
        cycles["null_image"] = Cycle(stub, "null", "null-i", target, True, null_image)
        image_group = ["overlayfs_image", "rootfs_image", "null_image"]
        if daemons.compare is not None:
            Cycle(stub, "rootfsb", "b-w", target, True).warm()
            b_image = make_image(stub, "rootfsb", tree, target, with_namespace=True)
            cycles["b_image"] = Cycle(stub, "rootfsb", "b-i", target, True, b_image)
            image_group.append("b_image")
        for cycle in cycles.values():
            cycle.warm()
        for group in (image_group, ["overlayfs", "rootfs"]):
            for rep in range(reps):  # each in turn goes first
                for name in group[rep % len(group) :] + group[: rep % len(group)]:
                    cycles[name].run()
        for _ in range(reps):
            cycles["rootfs_direct"].run()
        result: dict[str, Any] = {name: cycle.medians() for name, cycle in cycles.items()}
        if block:
            result["cpu"] = cpu_per_cycle(daemons, cycles, block, 3, kept)
        if runs and find_busybox() is not None:
            result["ctr_run"] = ctr_runs(daemons, runs)
        result["pending_gc"] = leftovers(daemons, snapshots_pb2_grpc.SnapshotsStub(snap_channel), kept)
    return result


def filesystem(path: str) -> str:
    """The type of the filesystem ``path`` is on (the last mount below which it lies)."""
    found, best = "?", ""
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            point = fields[4].replace("\\040", " ")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and len(point) >= len(best):
                best, found = point, fields[fields.index("-") + 1]
    return f"{found} ({best})"


def version() -> str:
    out = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--block", type=int, default=100, help="cycles per CPU-time block (0: none)")
    parser.add_argument("--runs", type=int, default=15, help="ctr runs per snapshotter (0: none)")
    parser.add_argument(
        "--compare",
        metavar="ARGS",
        help="a second proxied rootfs-snapshotter with these extra arguments (e.g. '--spares 0'), "
        "its cycle over its image interleaved with the other two",
    )
    parser.add_argument(
        "--compare-env",
        metavar="NAME=VALUE",
        action="append",
        default=[],
        help="set in the second snapshotter's environment (repeatable); e.g. "
        "PYTHONPATH=OLD/frontends/containerd:OLD runs an older checkout's code beside this one",
    )
    parser.add_argument(
        "--dir",
        default=None,
        help="make the temporary directory (containerd's root and state, both snapshotters' "
        "directories) under DIR, e.g. a tmpfs, instead of the default temporary directory",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (containerd, real mounts)", file=sys.stderr)
        return 1
    if shutil.which("containerd") is None:
        print("containerd is not installed (apt-get install containerd)", file=sys.stderr)
        return 1
    had_run_dir = os.path.exists(RUN_DIR)
    if args.dir is not None and not os.path.isdir(args.dir):
        parser.error(f"--dir {args.dir}: not a directory")
    work = tempfile.mkdtemp(prefix="rootfs-bench-ctrd-", dir=args.dir)
    os.chmod(work, 0o711)
    if args.compare_env and args.compare is None:
        parser.error("--compare-env needs --compare (give it '' for no extra arguments)")
    if any("=" not in item for item in args.compare_env):
        parser.error("--compare-env takes NAME=VALUE")
    compare_env = dict(item.split("=", 1) for item in args.compare_env)
    daemons = Daemons(work, None if args.compare is None else shlex.split(args.compare), compare_env)
    failed = None
    result: dict[str, Any] = {}
    try:
        target = os.path.join(work, "mnt")
        os.mkdir(target)
        daemons.start()
        result = measure(daemons, args.reps, args.block, args.runs, target)
    except (OSError, RuntimeError, grpc.RpcError) as exc:
        logs = "\n".join(daemons.log(name) for name in ("containerd", "snapshotter", "direct"))
        failed = f"{type(exc).__name__}: {exc}\n{logs}"
    finally:
        daemons.stop()
        left = hygiene.unmount_all_below(work)
        clean = hygiene.delete_tree(work)
        if not had_run_dir:
            for parent, _dirs, _files in os.walk(RUN_DIR, topdown=False):
                try:
                    os.rmdir(parent)  # empty directories only
                except OSError:
                    pass
    if failed:
        print(failed, file=sys.stderr)
    if not clean:
        print(f"left {work} (mounts below it: {left})", file=sys.stderr)
        return 3
    if failed:
        return 1
    result["rootfs_vs_overlayfs"] = result["rootfs_image"]["total_ms"] / result["overlayfs_image"]["total_ms"]
    result["no_parent_rootfs_vs_overlayfs"] = result["rootfs"]["total_ms"] / result["overlayfs"]["total_ms"]
    result["direct_vs_proxied"] = result["rootfs_direct"]["total_ms"] / result["rootfs_image"]["total_ms"]
    result["null_vs_overlayfs"] = result["null_image"]["total_ms"] / result["overlayfs_image"]["total_ms"]
    result["rootfs_vs_null"] = result["rootfs_image"]["total_ms"] / result["null_image"]["total_ms"]
    result["filesystem"] = filesystem(work)
    if "b_image" in result:
        result["compare_vs_overlayfs"] = result["b_image"]["total_ms"] / result["overlayfs_image"]["total_ms"]
        result["compare_vs_rootfs"] = result["b_image"]["total_ms"] / result["rootfs_image"]["total_ms"]
    result["reps"] = args.reps
    result["containerd"] = version()
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    b_label = " ".join(["rootfs", args.compare or "", *(f"[{name}]" for name in compare_env)]).strip()
    print(f"{result['containerd']}; on {result['filesystem']}; median of {args.reps} cycles, ms")
    print("cycle                               prepare  mount+umount  remove   total  total p90")
    for name, label in (
        ("overlayfs_image", "containerd -> overlayfs, image"),
        ("rootfs_image", "containerd -> rootfs, image"),
        ("overlayfs", "containerd -> overlayfs, no parent"),
        ("rootfs", "containerd -> rootfs, no parent"),
        ("null_image", "containerd -> null proxy, image"),
        ("rootfs_direct", "rootfs-snapshotter direct, image"),
        ("b_image", f"containerd -> {b_label}, image"),
    ):
        if name not in result:
            continue
        row = result[name]
        print(
            f"{label:<34}  {row['prepare_ms']:>7.3f}  {row['mount_ms']:>12.3f}  "
            f"{row['remove_ms']:>6.3f}  {row['total_ms']:>6.3f}  {row['total_p90_ms']:>9.3f}"
        )
    for label, ratio in (
        ("rootfs/overlayfs through containerd, over the image (target <= 1)", "rootfs_vs_overlayfs"),
        ("null proxy/overlayfs, over the image (a proxy's floor)", "null_vs_overlayfs"),
        ("rootfs/null proxy, over the image (rootfs's own share)", "rootfs_vs_null"),
        ("rootfs/overlayfs through containerd, no parent", "no_parent_rootfs_vs_overlayfs"),
        ("rootfs direct/through containerd, over the image", "direct_vs_proxied"),
        (f"{b_label}/overlayfs, over the image", "compare_vs_overlayfs"),
        (f"{b_label}/rootfs, over the image", "compare_vs_rootfs"),
    ):
        if ratio not in result:
            continue
        print(f"{label + ':':<68} {result[ratio]:.2f}")
    cpu = result.get("cpu")
    if cpu is not None:
        print(
            f"CPU ms per cycle, deletion included (median of 3 blocks of {args.block}): "
            f"overlayfs {cpu['overlayfs']:.3f}, rootfs {cpu['rootfs']:.3f}; "
            f"rootfs/overlayfs: {cpu['rootfs_vs_overlayfs']:.2f}"
        )
    runs = result.get("ctr_run")
    if runs is None:
        print("ctr run: not measured (--runs 0, or no busybox-static for the image)")
    else:
        print(
            f"ctr run --rm /bin/true, median of {args.runs} each, ms: "
            f"overlayfs {runs['overlayfs']['median_ms']:.1f} (p90 {runs['overlayfs']['p90_ms']:.1f}), "
            f"rootfs {runs['rootfs']['median_ms']:.1f} (p90 {runs['rootfs']['p90_ms']:.1f}); "
            f"rootfs/overlayfs: {runs['rootfs_vs_overlayfs']:.2f}"
        )
    pending = result["pending_gc"]
    print(
        f"left for containerd's GC at the end: overlayfs {pending['overlayfs']}, "
        f"rootfs {pending['rootfs']} (removed before stopping); "
        f"Cleanups that reconciled rootfs's base directory: {pending['rootfs_reconciling_cleanups']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
