"""Helpers the integration tests share (the fixtures themselves are in
conftest.py): running the real ``rootfs`` command, reading a base directory's
state without opening a ``RootFS`` (opening one sweeps), checking that what is
left is consistent, and syscalls that kill their own process on purpose.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from rootfs_core.store import ROOT_NAME, Store, is_instance_id
from rootfs_core.testing.checks import instance_mounts
from rootfs_core.testing.faults import FaultySyscalls

BACKENDS = ("overlayfs", "quilt")
HOSTNAME = b"prototype\n"  # etc/hostname of rootfs_core.testing.prototypes.make_tiny_prototype
ERROR_LINE = re.compile(r"^rootfs: (Err[A-Za-z]+): ", re.MULTILINE)
SLOW = os.environ.get("ROOTFS_SLOW") == "1"


# ------------------------------------------------------------------ backends
def require_backends(base: str, *names: str) -> None:
    """Skip the test, with the probe's reason, unless every named backend
    works here (in ``base``)."""
    if os.geteuid() != 0:
        pytest.skip("real mounts need root")
    from rootfs_core import RootFS

    for name in names:
        probe = RootFS(base, backend=name).probe(name)
        if not probe.supported:
            pytest.skip(f"{name} is not supported here: {probe.reason}")


# ------------------------------------------------------------------ the command line
def cli_argv(base: str | bytes, *args: str | bytes) -> list[str | bytes]:
    """``python -m rootfs_core.cli --base-dir BASE ARGS`` (bytes allowed, for
    paths that are not UTF-8)."""
    return [sys.executable, "-m", "rootfs_core.cli", "--base-dir", base, *args]


def cli_env() -> dict[str, str]:
    """The environment of a ``rootfs`` run: no configuration file, no forced
    backend or base directory from the caller's environment, and the same
    locale wherever the tests run (tox sets ``PYTHONIOENCODING=utf-8``,
    which makes stdout strict: that case has a test of its own)."""
    dropped = ("ROOTFS_BACKEND", "ROOTFS_BASE_DIR", "PYTHONIOENCODING")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["ROOTFS_CONFIG"] = "/nonexistent/rootfs-config.toml"
    env["LC_ALL"] = "C.UTF-8"
    return env


def run_cli(
    base: str | bytes, *args: str | bytes, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``rootfs`` to completion (``env``: extra environment variables).
    ``cwd="/"``: the installed package is imported, never the checkout, and
    the command's own cwd is in no root."""
    return subprocess.run(
        cli_argv(base, *args),
        capture_output=True,
        check=False,
        timeout=timeout,
        cwd="/",
        env={**cli_env(), **(env or {})},
    )


def text(data: bytes) -> str:
    """Output decoded as the command wrote it (paths may not be UTF-8)."""
    return data.decode("utf-8", "surrogateescape")


def assert_cli_error(proc: subprocess.CompletedProcess[bytes], error_id: str | None = None) -> str:
    """The command failed the documented way: exit 1, a line of stderr
    starting with ``rootfs: ErrSomething: `` (a warning from the sweep on
    opening may come first), no traceback. Returns the id it named."""
    err = text(proc.stderr)
    assert proc.returncode == 1, f"exit {proc.returncode}, stderr: {err!r}"
    assert "Traceback" not in err, err
    match = ERROR_LINE.search(err)
    assert match, f"stderr does not name an error id: {err!r}"
    if error_id is not None:
        assert match.group(1) == error_id, err
    return match.group(1)


def list_json(base: str) -> list[dict[str, Any]]:
    """``rootfs list --json`` (opening the base directory sweeps it first)."""
    proc = run_cli(base, "list", "--json")
    assert proc.returncode == 0, text(proc.stderr)
    rows = json.loads(proc.stdout)
    assert isinstance(rows, list)
    return rows


def generate_json(base: str, backend: str, prototype: str | bytes, *args: str) -> dict[str, Any]:
    """``rootfs --backend B generate PROTO --json``, which must succeed."""
    proc = run_cli(base, "--backend", backend, "generate", prototype, "--json", *args)
    assert proc.returncode == 0, text(proc.stderr)
    data = json.loads(proc.stdout)
    assert isinstance(data, dict)
    return data


# ------------------------------------------------------------------ state of a base directory
@dataclasses.dataclass
class BaseState:
    """A base directory as found on disk and in the mount table, read
    without opening a RootFS (which would sweep it)."""

    records: list[str]
    markers: list[str]
    dirs: list[str]  # entries named like an instance
    others: list[str]  # entries that are neither .rootfs nor instance-shaped
    strays: list[str]  # files in .rootfs/records and .rootfs/incomplete that are neither
    mounts: list[str]


def base_state(base: str) -> BaseState:
    store = Store(base)
    names = sorted(os.listdir(base))
    records = store.ids()
    named = {r + ".json" for r in records}
    strays = [f"records/{n}" for n in os.listdir(store.records_dir) if n not in named]
    strays += [f"incomplete/{n}" for n in os.listdir(store.incomplete_dir) if not is_instance_id(n)]
    return BaseState(
        records=records,
        markers=sorted(store.incomplete_ids()),
        dirs=[n for n in names if is_instance_id(n)],
        others=[n for n in names if n != ".rootfs" and not is_instance_id(n)],
        strays=sorted(strays),
        mounts=instance_mounts(base),
    )


def assert_works(root: str, tag: str = "probe", *, hostname: bytes | None = HOSTNAME) -> None:
    """A finished root still works: a prototype file reads through it (with
    ``hostname`` in it, unless None), and a file written in its tmp reads back."""
    with open(os.path.join(root, "etc/hostname"), "rb") as fh:
        content = fh.read()
    assert hostname is None or content == hostname, (root, content)
    path = os.path.join(root, "tmp", f"works-{tag}")
    with open(path, "wb") as fh:
        fh.write(tag.encode())
    with open(path, "rb") as fh:
        assert fh.read() == tag.encode()
    os.unlink(path)


def assert_consistent(
    base: str,
    mounts_per_instance: dict[str, int],
    context: str = "",
    *,
    listed: list[dict[str, Any]] | None = None,
) -> list[str]:
    """Nothing incomplete is left and every record is a whole, working
    instance; return the ids of the (ready) instances.

    - no incomplete marker; instance directories are exactly the records;
    - every mount below the base dir belongs to a recorded instance, and
      each instance has exactly as many mounts as a fresh one of its backend;
    - ``rootfs list --json`` (or ``listed``, the same rows from the API)
      shows the same ids, all ready.
    """
    state = base_state(base)
    where = f"{context}: {state}"
    assert state.markers == [], f"incomplete markers left: {where}"
    assert state.dirs == state.records, f"instance directories and records differ: {where}"
    assert state.others == [], f"unexpected entries in the base directory: {where}"
    assert state.strays == [], f"stray files in the state directory: {where}"
    store = Store(base)
    owned: dict[str, list[str]] = {i: [] for i in state.records}
    for point in state.mounts:
        rel = os.path.relpath(point, base).split("/")
        assert rel[0] in owned, f"mount {point} belongs to no recorded instance: {where}"
        owned[rel[0]].append(point)
    for instance_id, points in owned.items():
        record = store.read(instance_id)
        assert record is not None, where
        assert record.root == os.path.join(base, instance_id, ROOT_NAME), where
        assert record.root in points, f"{record.root} is not mounted: {where}"
        expected = mounts_per_instance[record.backend]
        assert len(points) == expected, f"{record.root} has {len(points)} mounts, not {expected}: {where}"
    rows = list_json(base) if listed is None else listed
    assert sorted(r["id"] for r in rows) == state.records, f"list --json disagrees: {rows}; {where}"
    assert all(r["state"] == "ready" for r in rows), f"list --json: {rows}; {where}"
    return state.records


# ------------------------------------------------------------------ randomness and kills
def seed_from_env() -> int:
    """``ROOTFS_SEED`` replays a run; otherwise a fresh seed (printed by the
    caller, so a failure can be replayed)."""
    given = os.environ.get("ROOTFS_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


@dataclasses.dataclass
class Outcome:
    """How a command that may have been killed ended."""

    returncode: int
    stdout: bytes
    stderr: bytes
    killed_after: float  # seconds from start (or from the first log line) to the kill


def run_and_kill(argv: list[str | bytes], *, anchored: bool, delay: float, timeout: float = 60) -> Outcome:
    """Start ``argv`` (with ``-v``, so it logs each step) in a process group
    of its own and SIGKILL the whole group ``delay`` seconds after its start
    or, if ``anchored``, after its first log line (the first step of real
    work, once Python has started). The group, so that a ``cp -a`` the
    command started dies with it, as under a supervisor that kills a cgroup."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        cwd="/",
        env=cli_env(),
        start_new_session=True,
    )
    assert proc.stderr is not None
    first = b""
    if anchored:
        first = proc.stderr.readline()  # blocks until the first step is logged, or EOF
    time.sleep(delay)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # a zombie keeps its pid until waited for
    except ProcessLookupError:
        pass
    out, err = proc.communicate(timeout=timeout)
    return Outcome(proc.returncode, out, first + err, delay)


def timed_run(argv: list[str | bytes]) -> tuple[float, float]:
    """Run ``argv`` (with ``-v``) to completion; return (seconds in all,
    seconds from its first log line to its exit)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd="/", env=cli_env()
    )
    assert proc.stderr is not None
    proc.stderr.readline()
    first = time.monotonic()
    _, err = proc.communicate(timeout=120)
    ended = time.monotonic()
    assert proc.returncode == 0, text(err)
    return ended - started, ended - first


class KillingSyscalls(FaultySyscalls):
    """Real syscalls that SIGKILL their own process at the ``kill_at``-th
    changing call, ``before`` it is made or ``after`` it returned, once
    ``armed``. Unarmed (or with ``kill_at`` 0) they only count calls."""

    # Every changing call FaultySyscalls counts (all its public methods but the one query).
    CHANGING = tuple(
        name
        for name, value in vars(FaultySyscalls).items()
        if callable(value) and not name.startswith("_") and name != "is_mountpoint"
    )

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.kill_at = 0
        self.when = "before"

    def _call(self, name: str, *args: object) -> None:
        super()._call(name, *args)
        self._maybe_die("before")

    def _maybe_die(self, when: str) -> None:
        if self.armed and self.when == when and len(self.calls) == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)


def _killing(name: str) -> Any:
    inherited = getattr(FaultySyscalls, name)

    def method(self: KillingSyscalls, *args: Any) -> None:
        inherited(self, *args)
        self._maybe_die("after")

    method.__name__ = name
    method.__doc__ = f"{name}, then die here if this is the call to die after."
    return method


for _name in KillingSyscalls.CHANGING:
    setattr(KillingSyscalls, _name, _killing(_name))


# ------------------------------------------------------------------ pausing or killing a child at a moment
def act_once_visible(
    monkeypatch: pytest.MonkeyPatch, wanted: Callable[[str], bool], act: Callable[[], None]
) -> None:
    """In a forked child only: right after a call makes a path that
    ``wanted`` accepts appear (``os.open`` with ``O_CREAT``, ``open`` for
    writing, ``os.link``, ``os.rename``, ``os.replace``), call ``act`` once.

    Whatever way the store creates a file (written in place, or finished
    under a temporary name and then linked or renamed into place), this
    stops the process at the first moment another process can see it.
    """
    done = False

    def check(path: object) -> None:
        nonlocal done
        if done or not isinstance(path, str | bytes):
            return
        name = os.fsdecode(path)
        if wanted(name) and os.path.lexists(name):
            done = True
            act()

    real_open, real_link, real_rename, real_replace = os.open, os.link, os.rename, os.replace
    real_builtin_open = builtins.open

    def os_open(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
        fd = real_open(path, flags, mode, dir_fd=dir_fd)
        if flags & os.O_CREAT and dir_fd is None:
            check(path)
        return fd

    def link(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_link(src, dst, *args, **kwargs)
        check(dst)

    def rename(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_rename(src, dst, *args, **kwargs)
        check(dst)

    def replace(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        real_replace(src, dst, *args, **kwargs)
        check(dst)

    def builtin_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        handle = real_builtin_open(file, mode, *args, **kwargs)
        if any(flag in mode for flag in "wxa+"):
            check(file)
        return handle

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "link", link)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(builtins, "open", builtin_open)


def in_child_paused(action: Callable[[Callable[[], None]], None], seconds: float = 1.0) -> tuple[int, bool]:
    """Fork; the child runs ``action(pause)`` then exits (0, or 3 if it
    raised), where ``pause()`` tells the parent and sleeps ``seconds``.
    Returns once the child has paused (True) or exited without pausing
    (False), with the child's pid, which the caller must wait for."""
    ready, go = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(ready)

        def pause() -> None:
            os.write(go, b"x")
            time.sleep(seconds)

        code = 0
        try:
            action(pause)
        except BaseException:
            code = 3
        os._exit(code)
    os.close(go)  # so that the read ends if the child exits without pausing
    try:
        readable, _, _ = select.select([ready], [], [], 60)
        paused = bool(readable) and os.read(ready, 1) == b"x"
    finally:
        os.close(ready)
    return pid, paused
