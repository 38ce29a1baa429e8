"""The snapshotter's background work (roots made ahead, deletions after a
Remove) done by a child process at a lower CPU priority.

Why a process: that work used to run in threads of the server. containerd
sends the next Prepare while the last snapshot is being deleted and the next
spare root made, and those threads took the CPU and the interpreter from the
request: with no background work left during the timed cycles the Prepare
through containerd was 1 ms shorter (bench/containerd.py, two CPUs). A thread
cannot be given a lower priority safely (it would hold the interpreter lock
while starved), a process can: the kernel runs the requests first and the
helper in what is left. The helper runs the core like any other process
sharing a base directory (the core's locks and records are on disk), so a
root it made is the server's to hand out, and one it was making when it died
is the core's to sweep.

The protocol is one JSON object a line each way over the child's stdin and
stdout: ``{"op": NAME, "args": [...]}``, answered ``{"ok": RESULT}`` or
``{"error": {...}}`` (a ``RootFSError`` keeps its id). The child exits when
its stdin closes (``close``, or the server gone), ignores SIGINT and SIGTERM
(the server stops it when its own work is done, not in the middle of a
deletion), and is SIGKILLed when the thread that started it ends (see
``rootfs_core.syscalls.dying_with_parent``): it is started at once, by the
thread that makes the snapshotter (the server's main thread), and only a
helper that died is started again by a thread that calls it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from typing import Any

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.errors import ImplErrorId
from rootfs_core.log import LOGGER_NAME
from rootfs_core.syscalls import dying_with_parent

_ID_KINDS: dict[str, type[ErrorId] | type[ImplErrorId]] = {"ErrorId": ErrorId, "ImplErrorId": ImplErrorId}


class HelperError(RuntimeError):
    """The helper failed outside the core (an unexpected error), or died."""


class Helper:
    """One child process, started at once, and again by the next call after it died.

    Calls are served one at a time, in the caller's thread (which waits,
    holding no interpreter lock, while the child works)."""

    def __init__(self, base_dir: str, backend: str, *, nice: int) -> None:
        # nice(1) lowers the priority before the interpreter starts, so
        # that even its imports yield to the requests.
        program = [
            sys.executable,
            "-m",
            "rootfs_containerd.helper",
            "--base-dir",
            base_dir,
            "--backend",
            backend,
        ]
        if logging.getLogger(LOGGER_NAME).isEnabledFor(logging.INFO):  # rootfs-snapshotter -vv
            program.append("--log-steps")
        self._argv = ["nice", "-n", str(nice), *program]
        self._lock = threading.Lock()
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = self._start()

    def _start(self) -> subprocess.Popen[bytes]:
        # The child dies with this thread (dying_with_parent).
        return subprocess.Popen(dying_with_parent(self._argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def generate(self, *stack: str) -> str:
        """``RootFS.generate(*stack)``: a writable root over ``stack``."""
        root: str = self._call("generate", *stack)
        return root

    def remove(self, instance_id: str) -> bool:
        """``RootFS.remove(instance_id, missing_ok=True)``."""
        done: bool = self._call("remove", instance_id)
        return done

    def remove_layer(self, layer_id: str) -> None:
        """``RootFS.remove_layer(layer_id)``."""
        self._call("remove_layer", layer_id)

    def close(self) -> None:
        """Let the child finish the call it is on, then end it; calls after
        this fail."""
        with self._lock:
            self._closed = True
            proc, self._proc = self._proc, None
        if proc is not None:
            self._stop(proc)

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()  # the child's loop ends at the end of its input
        proc.stdout.close()
        proc.wait()

    def _call(self, op: str, *args: str) -> Any:
        with self._lock:
            if self._closed:
                raise HelperError(f"{op}: the helper is closed")
            if self._proc is not None and self._proc.poll() is not None:  # died since the last call
                self._stop(self._proc)
                self._proc = None
            if self._proc is None:
                self._proc = self._start()
            proc = self._proc
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps({"op": op, "args": args}).encode() + b"\n")
                proc.stdin.flush()
                line = proc.stdout.readline()
            except OSError:  # a broken pipe: it died after the poll above
                line = b""
            if not line:
                self._proc = None
                self._stop(proc)
                raise HelperError(f"{op}: the helper process died (exit status {proc.returncode})")
        reply = json.loads(line)
        if "ok" in reply:
            return reply["ok"]
        error = reply["error"]
        kind = _ID_KINDS.get(error.get("kind") or "")
        if kind is not None:
            raise RootFSError(kind[error["id"]], error["message"])
        raise HelperError(f"{op}: {error['type']}: {error['message']}")


def _serve(rfs: RootFS, request: dict[str, Any]) -> Any:
    op, args = request["op"], request["args"]
    if op == "generate":
        return rfs.generate(*args)
    if op == "remove":
        return rfs.remove(args[0], missing_ok=True)
    if op == "remove_layer":
        rfs.remove_layer(args[0])
        return None
    raise ValueError(f"unknown operation {op!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rootfs_containerd.helper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-dir", required=True)
    parser.add_argument("--backend", required=True)
    parser.add_argument("--log-steps", action="store_true", help="log the core's steps (mkdir, mount...)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if args.log_steps:
        logging.getLogger(LOGGER_NAME).setLevel(logging.INFO)
    logging.basicConfig(
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s helper %(name)s: %(message)s",
        level=logging.WARNING,
    )
    # The replies get a descriptor of their own; whatever else writes to
    # standard output here (the programs the core runs) goes to stderr.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    rfs = RootFS(args.base_dir, backend=args.backend, sweep=False)
    for line in sys.stdin.buffer:
        try:
            reply: dict[str, Any] = {"ok": _serve(rfs, json.loads(line))}
        except RootFSError as exc:
            reply = {
                "error": {
                    "kind": type(exc.error_id).__name__,
                    "id": exc.error_id.name,
                    "message": exc.message,
                }
            }
        except Exception as exc:
            reply = {"error": {"type": type(exc).__name__, "message": str(exc)}}
        replies.write(json.dumps(reply).encode() + b"\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
