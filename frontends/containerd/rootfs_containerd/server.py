"""``rootfs-snapshotter``: serve containerd's snapshots API on a unix socket.

    rootfs-snapshotter --address /run/rootfs-snapshotter/rootfs.sock \\
        --base-dir /var/lib/rootfs-containerd [--backend NAME] [-v]

and in containerd's config.toml::

    [proxy_plugins.rootfs]
      type = "snapshot"
      address = "/run/rootfs-snapshotter/rootfs.sock"
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import logging
import os
import signal
import socket
import stat
import sys
import threading
from types import FrameType

import grpc
from rootfs_core.log import LOGGER_NAME

from rootfs_containerd.api import snapshots_pb2_grpc
from rootfs_containerd.grpc_service import Servicer
from rootfs_containerd.service import Snapshotter

log = logging.getLogger("rootfs_containerd")
SIGNAL_POLL = 0.5  # seconds between two looks for a signal another thread received


def _clear_stale_socket(path: str) -> None:
    """Delete a socket no server listens on (a killed snapshotter's);
    refuse a live one or anything that is not a socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SystemExit(f"rootfs-snapshotter: {path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)
        return
    finally:
        probe.close()
    raise SystemExit(f"rootfs-snapshotter: a server already listens on {path}")


def serve(address: str, snapshotter: Snapshotter, workers: int = 16) -> grpc.Server:
    """Start serving (in threads) and return the server."""
    os.makedirs(os.path.dirname(os.path.abspath(address)), mode=0o711, exist_ok=True)
    _clear_stale_socket(address)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="rpc"))
    snapshots_pb2_grpc.add_SnapshotsServicer_to_server(Servicer(snapshotter), server)
    old = os.umask(0o077)  # the socket: root's alone (containerd runs as root)
    try:
        server.add_insecure_port("unix:" + os.path.abspath(address))
        server.start()
    finally:
        os.umask(old)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="rootfs-snapshotter", description="rootfs as a containerd proxy snapshotter"
    )
    parser.add_argument("--address", required=True, help="the unix socket to listen on")
    parser.add_argument("--base-dir", required=True, help="the rootfs base directory it owns")
    parser.add_argument("--backend", default=None, help="force a backend (else the best that stacks layers)")
    parser.add_argument("--workers", type=int, default=16, help="requests served at once (default 16)")
    parser.add_argument(
        "--spares",
        type=int,
        default=4,
        metavar="N",
        help="layer stacks (images) that keep a writable root made ahead for the next Prepare, "
        "once prepared twice (default 4; 0: none)",
    )
    parser.add_argument(
        "--spare-idle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a stack's spare root is removed after this long without a Prepare over it (default 60)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log every request and its time; twice: the core's steps",
    )
    parser.add_argument(
        "--reconcile-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a Cleanup reconciles the metadata with the base directory at most this often, "
        "unless an operation failed since (default 60; 0: every Cleanup)",
    )
    parser.add_argument(
        "--helper-nice",
        type=int,
        default=10,
        metavar="N",
        help="the niceness added to the helper processes that make roots ahead and delete "
        "removed snapshots, so that requests get the CPU first (0 to 19; default 10)",
    )
    parser.add_argument(
        "--no-sync-commits",
        dest="sync_commits",
        action="store_false",
        help="a Commit does not wait for the base directory's filesystem to reach the disk "
        "(syncfs) before recording the layer: faster on a busy disk, but a power cut can leave "
        "a committed snapshot whose files are empty or missing",
    )
    args = parser.parse_args(argv)
    for name, value in (
        ("--address", args.address),
        ("--base-dir", args.base_dir),
        ("--backend", args.backend),
    ):
        if value == "":
            parser.error(f"{name} is empty")
    if args.spares < 0 or args.spare_idle <= 0 or args.reconcile_every < 0:
        parser.error("--spares and --reconcile-every must be 0 or more, --spare-idle more than 0")
    if not 0 <= args.helper_nice <= 19:
        parser.error("--helper-nice must be 0 to 19")
    logging.basicConfig(
        stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING
    )
    logging.getLogger("rootfs_containerd").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    if args.verbose > 1:
        # The core's steps (mkdir, mount, umount...) are info messages on its
        # own logger, "rootfs" (rootfs_core.log), not on a module's name.
        logging.getLogger(LOGGER_NAME).setLevel(logging.INFO)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("%s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        snapshotter = Snapshotter(
            args.base_dir,
            args.backend,
            spares=args.spares,
            spare_idle=args.spare_idle,
            reconcile_every=args.reconcile_every,
            helper_nice=args.helper_nice,
            sync_commits=args.sync_commits,
        )
    except (RuntimeError, OSError) as exc:
        print(f"rootfs-snapshotter: {exc}", file=sys.stderr)
        return 1
    try:
        server = serve(args.address, snapshotter, args.workers)
        log.info("serving containerd.services.snapshots.v1.Snapshots on %s", args.address)
        # Not a bare stop.wait(): the kernel may hand SIGTERM to any thread
        # (gRPC's, the workers'); Python runs the handler in this one only,
        # which a wait without a timeout leaves asleep for good.
        while not stop.wait(SIGNAL_POLL):
            pass
        # Requests under way get 30 s to finish; new ones are refused.
        server.stop(grace=30).wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(args.address)
    finally:
        snapshotter.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
