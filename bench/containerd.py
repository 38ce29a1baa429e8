"""What a snapshot cycle costs through containerd: rootfs-snapshotter (the
proxy plugin) beside containerd's own overlayfs snapshotter, in one run.

    unshare -m --propagation private python bench/containerd.py
    unshare -m --propagation private python bench/containerd.py --reps 20 --json

A private containerd (root, state and sockets under a temporary directory,
the proxy plugin ``rootfs`` in its config) and ``rootfs-snapshotter
--backend overlayfs`` run as subprocesses. One warm gRPC client to
containerd's socket (``containerd.services.snapshots.v1.Snapshots``, header
``containerd-namespace: bench``) times, interleaved (which goes first
alternates), the cycle Prepare(key, parent="") -> mount what it returned
(rootfs: the bind of its mounted root; overlayfs: a bind of an empty
directory, as it answers a snapshot without parent) -> unmount ->
Remove(key), with snapshotter ``overlayfs`` and ``rootfs``. Then, on its
own, the same cycle on the socket of a second rootfs-snapshotter (a base
directory of its own) that containerd does not know, so nothing is in
between. (Not the proxied one's socket: containerd's collector deletes
whatever it finds there that it did not make.)

Through containerd, Remove deletes the snapshot from containerd's metadata
only: the snapshotter's own removal happens later, in containerd's garbage
collection (scheduled after mutations; for a proxy it ends with a Cleanup
call), outside the timed calls but on the same machine while they run, so
it shows in the spread (p90, max) rather than in the medians, and a
collection holds up the next Prepare of its snapshotter while it runs.
rootfs-snapshotter deletes after its Remove has replied (in a thread of its
own), so a deletion falls in whichever timed calls follow, the native ones
too: the interleaved medians are latencies, not the whole cost. The **CPU**
cost runs each snapshotter's cycle alone, in blocks of back-to-back cycles
(blocks alternate between the two), each block until what it made is
deleted on disk again (containerd's overlayfs snapshot directories, rootfs's
instance directories; a synchronous collection, ``ctr leases delete
--sync``, makes sure it runs): the CPU time containerd, the proxied
rootfs-snapshotter and this process used, per cycle. What the collector had
not yet removed at the end is reported (and removed).
The snapshots carry ``containerd.io/gc.root``: unreferenced (no lease), the
collector could take one between its Prepare and its Remove.

Medians, and the ratio rootfs/overlayfs through containerd. Nothing is
asserted; both daemons are stopped, everything mounted below the temporary
directory is unmounted, and it is deleted only once nothing is mounted below
it. containerd 1.6 makes ``/run/containerd/...`` whatever its configuration:
those directories are removed again (empty ones only) if they were not there.

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

    def __init__(self, top: str) -> None:
        self.top = top
        self.base = os.path.join(top, "base")
        self.snap_sock = os.path.join(top, "snap.sock")
        self.direct_base = os.path.join(top, "direct-base")
        self.direct_sock = os.path.join(top, "direct.sock")
        self.sock = os.path.join(top, "containerd.sock")
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        os.mkdir(self.base, 0o700)
        os.mkdir(self.direct_base, 0o700)

    def _start(self, name: str, command: list[str], socket: str) -> None:
        log = os.path.join(self.top, f"{name}.log")
        with open(log, "ab") as out:
            proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
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
        for name, sock, base in (
            ("snapshotter", self.snap_sock, self.base),
            ("direct", self.direct_sock, self.direct_base),
        ):
            self._start(
                name, [*program, "--address", sock, "--base-dir", base, "--backend", "overlayfs"], sock
            )
        config = os.path.join(self.top, "config.toml")
        with open(config, "w", encoding="utf-8") as fh:
            fh.write(private_containerd_config(self.top, self.sock, self.snap_sock))
        self._start("containerd", ["containerd", "--config", config], self.sock)

    def stop(self, names: tuple[str, ...] = ("containerd", "snapshotter", "direct")) -> None:
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

    def __init__(self, stub: Any, snapshotter: str, prefix: str, target: str, with_namespace: bool) -> None:
        self.stub = stub
        self.snapshotter = snapshotter
        self.prefix = prefix
        self.target = target
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
            snapshots_pb2.PrepareSnapshotRequest(snapshotter=self.snapshotter, key=key, labels=self.labels),
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


def native_dirs(daemons: Daemons) -> list[str]:
    """What containerd's overlayfs snapshotter keeps on disk: a directory per snapshot."""
    found = os.path.join(daemons.top, "root", "io.containerd.snapshotter.v1.overlayfs", "snapshots")
    return os.listdir(found) if os.path.isdir(found) else []


def rootfs_dirs(daemons: Daemons) -> list[str]:
    """rootfs's instance directories in the proxied snapshotter's base directory."""
    return [name for name in os.listdir(daemons.base) if not name.startswith(".")]


def settle(daemons: Daemons, seconds: float = 30) -> None:
    """A synchronous collection, then wait until both snapshotters have
    deleted on disk what the cycles made."""
    lease = ctr(daemons, "leases", "create").split()[0]
    ctr(daemons, "leases", "delete", "--sync", lease)
    deadline = time.monotonic() + seconds
    while native_dirs(daemons) or rootfs_dirs(daemons):
        if time.monotonic() > deadline:
            left = native_dirs(daemons) + rootfs_dirs(daemons)
            raise RuntimeError(f"still on disk after {seconds} s: {left}")
        time.sleep(0.002)


def cpu_seconds(daemons: Daemons) -> float:
    """CPU time used so far by containerd, the proxied snapshotter and this process."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    total = used.ru_utime + used.ru_stime
    for name in ("containerd", "snapshotter"):
        with open(f"/proc/{daemons.procs[name].pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    return total


def cpu_per_cycle(daemons: Daemons, cycles: dict[str, Cycle], count: int, blocks: int) -> dict[str, Any]:
    """Per cycle, the CPU time of ``count`` back-to-back cycles of one
    snapshotter and of deleting what they made; ``blocks`` blocks each,
    alternating."""
    times: dict[str, list[float]] = {"overlayfs": [], "rootfs": []}
    for block in range(blocks):
        for name in times if block % 2 else reversed(times):
            settle(daemons)
            before = cpu_seconds(daemons)
            for _ in range(count):
                cycles[name].run(record=False)
            settle(daemons)
            times[name].append((cpu_seconds(daemons) - before) / count)
    found: dict[str, Any] = {name: statistics.median(values) * 1e3 for name, values in times.items()}
    found["rootfs_vs_overlayfs"] = found["rootfs"] / found["overlayfs"]
    return found


def leftovers(daemons: Daemons, proxied: Any) -> dict[str, int]:
    """Snapshots containerd's collector had not yet removed from each snapshotter;
    rootfs's are removed now (through the snapshotter, mounts and all), once
    containerd is stopped: its collector removes nothing more behind us."""
    daemons.stop(("containerd",))
    native = len(native_dirs(daemons))
    keys = [i.name for reply in proxied.List(snapshots_pb2.ListSnapshotsRequest()) for i in reply.info]
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
    # each collection that removed something of rootfs's ends with a Cleanup,
    # which the snapshotter logs at INFO as "cleanup: {...}"
    cleanups = daemons.log("snapshotter", tail=False).count("rootfs_containerd.grpc: cleanup:")
    return {"overlayfs": native, "rootfs": len(keys), "rootfs_cleanup_calls": cleanups}


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
        cycles = {
            "overlayfs": Cycle(stub, "overlayfs", "native", target, True),
            "rootfs": Cycle(stub, "rootfs", "proxied", target, True),
            "rootfs_direct": Cycle(direct, "", "direct", target, False),
        }
        for cycle in cycles.values():
            cycle.warm()
        pair = (cycles["overlayfs"], cycles["rootfs"])
        for rep in range(reps):
            for cycle in pair if rep % 2 else reversed(pair):
                cycle.run()
        for _ in range(reps):
            cycles["rootfs_direct"].run()
        result: dict[str, Any] = {name: cycle.medians() for name, cycle in cycles.items()}
        if block:
            result["cpu"] = cpu_per_cycle(daemons, cycles, block, 3)
        if runs and find_busybox() is not None:
            result["ctr_run"] = ctr_runs(daemons, runs)
        result["pending_gc"] = leftovers(daemons, snapshots_pb2_grpc.SnapshotsStub(snap_channel))
    return result


def version() -> str:
    out = subprocess.run(["containerd", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=50)
    parser.add_argument("--block", type=int, default=100, help="cycles per CPU-time block (0: none)")
    parser.add_argument("--runs", type=int, default=15, help="ctr runs per snapshotter (0: none)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (containerd, real mounts)", file=sys.stderr)
        return 1
    if shutil.which("containerd") is None:
        print("containerd is not installed (apt-get install containerd)", file=sys.stderr)
        return 1
    had_run_dir = os.path.exists(RUN_DIR)
    work = tempfile.mkdtemp(prefix="rootfs-bench-ctrd-")
    os.chmod(work, 0o711)
    daemons = Daemons(work)
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
    result["rootfs_vs_overlayfs"] = result["rootfs"]["total_ms"] / result["overlayfs"]["total_ms"]
    result["direct_vs_proxied"] = result["rootfs_direct"]["total_ms"] / result["rootfs"]["total_ms"]
    result["reps"] = args.reps
    result["containerd"] = version()
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"{result['containerd']}; median of {args.reps} cycles, ms")
    print("cycle                      prepare  mount+umount  remove   total  total p90")
    for name, label in (
        ("overlayfs", "containerd -> overlayfs"),
        ("rootfs", "containerd -> rootfs"),
        ("rootfs_direct", "rootfs-snapshotter direct"),
    ):
        row = result[name]
        print(
            f"{label:<25}  {row['prepare_ms']:>7.3f}  {row['mount_ms']:>12.3f}  "
            f"{row['remove_ms']:>6.3f}  {row['total_ms']:>6.3f}  {row['total_p90_ms']:>9.3f}"
        )
    print(f"rootfs/overlayfs through containerd: {result['rootfs_vs_overlayfs']:.2f}")
    print(f"rootfs direct/through containerd:    {result['direct_vs_proxied']:.2f}")
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
        f"Cleanup calls containerd made on rootfs: {pending['rootfs_cleanup_calls']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
