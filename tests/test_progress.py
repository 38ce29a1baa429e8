"""Copy progress: counted from what is copied, against the source's size,
reported to a callback by the library, drawn by the command only on a
terminal (tqdm or rich only then, and only if installed; else a plain line)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rootfs_core.syscalls import CopyProgress, LinuxSyscalls, tree_bytes


def _slow_cp(tmp_path: Path, before: float, after: float = 0.0) -> str:
    """A directory holding a ``cp`` that waits, copies, then waits again."""
    bin_dir = tmp_path / "slow-bin"
    bin_dir.mkdir()
    script = f'#!/bin/sh\nsleep {before}\n/bin/cp "$@" || exit $?\nsleep {after}\n'
    (bin_dir / "cp").write_text(script)
    (bin_dir / "cp").chmod(0o755)
    return str(bin_dir)


def test_tree_bytes_counts_regular_files_once(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "file").write_bytes(b"x" * 1000)
    os.link(tmp_path / "file", tmp_path / "sub/hardlink")  # copied once by cp -a, counted once
    (tmp_path / "sub/small").write_bytes(b"y" * 10)
    (tmp_path / "link").symlink_to("file")
    assert tree_bytes(str(tmp_path), os.lstat(tmp_path).st_dev) == 1010


def test_progress_counts_what_is_copied_not_free_space(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another writer on the same disk (8 MiB, written while the copy runs)
    changes nothing: copied never exceeds the source's size, is 0 before cp
    starts, all of it once cp has copied, and the last report says done."""
    source, target = tmp_path / "src", tmp_path / "dst"
    source.mkdir()
    target.mkdir()
    (source / "a").write_bytes(os.urandom(300_000))
    (source / "b").write_bytes(os.urandom(200_000))
    monkeypatch.setenv("PATH", f"{_slow_cp(tmp_path, 1.6, 1.6)}:{os.environ['PATH']}")
    events: list[CopyProgress] = []

    def other_writer() -> None:
        time.sleep(0.3)
        with open(tmp_path / "noise", "wb") as fh:
            for _ in range(8):
                fh.write(b"\0" * (1 << 20))
                fh.flush()
                os.fsync(fh.fileno())

    writer = threading.Thread(target=other_writer)
    writer.start()
    LinuxSyscalls(progress=events.append).copy_tree(str(source), str(target))
    writer.join()
    assert len(events) >= 3, events
    assert {(e.source, e.target, e.total) for e in events} == {(str(source), str(target), 500_000)}
    assert all(0 <= e.copied <= e.total for e in events)
    assert events[0].copied == 0  # cp still asleep: nothing copied yet, whatever the disk says
    assert events[-2].copied == 500_000  # copied, cp asleep again
    assert events[-1].done and events[-1].copied == 500_000
    assert not any(e.done for e in events[:-1])


def test_a_quick_copy_reports_nothing(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src/f").write_text("f\n")
    (tmp_path / "dst").mkdir()
    events: list[CopyProgress] = []
    LinuxSyscalls(progress=events.append).copy_tree(str(tmp_path / "src"), str(tmp_path / "dst"))
    assert events == []


def test_a_failing_callback_stops_the_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the callback raises comes out of copy_tree, and cp is killed:
    nothing goes on writing into a target about to be deleted."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src/data").write_bytes(b"x" * 4096)
    (tmp_path / "dst").mkdir()
    monkeypatch.setenv("PATH", f"{_slow_cp(tmp_path, 1.5)}:{os.environ['PATH']}")

    def refuse(event: CopyProgress) -> None:
        raise RuntimeError("display broke")

    with pytest.raises(RuntimeError, match="display broke"):
        LinuxSyscalls(progress=refuse).copy_tree(str(tmp_path / "src"), str(tmp_path / "dst"))
    time.sleep(1.0)  # when the wrapper's sleep would have ended
    assert os.listdir(tmp_path / "dst") == []


def _rootfs_on_a_terminal(
    args: list[str], env: dict[str, str], tty: bool
) -> tuple[subprocess.CompletedProcess[str], str]:
    """The real command, stdout a pipe, stderr a terminal (or a pipe)."""
    argv = [sys.executable, "-m", "rootfs_core", *args]
    if not tty:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, cwd="/", check=False)
        return out, out.stderr
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=follower, text=True, env=env, cwd="/", start_new_session=True
        )
        os.close(follower)
        follower = -1
        chunks = []
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the command closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        stdout, _ = proc.communicate(timeout=120)
    finally:
        os.close(leader)
        if follower >= 0:
            os.close(follower)
    shown = b"".join(chunks).decode(errors="replace")
    return subprocess.CompletedProcess(argv, proc.returncode, stdout, shown), shown


@pytest.fixture
def slow_env(discovery_path: str, tmp_path: Path) -> dict[str, str]:
    """The in-test backends (bindtest copies the prototype's etc), a slow
    cp, and a fake tqdm that says when it is imported and drawn."""
    fake = tmp_path / "fake-libs"
    fake.mkdir()
    marker = tmp_path / "tqdm-imported"
    (fake / "tqdm.py").write_text(
        f"open({str(marker)!r}, 'a').close()\n"
        "class tqdm:\n"
        "    def __init__(self, total, desc, file, **kw):\n"
        "        self.n, self.total, self.file = 0, total, file\n"
        "        file.write(f'FAKE-TQDM {desc} {total}\\n'); file.flush()\n"
        "    def update(self, n):\n"
        "        self.n += n\n"
        "    def close(self):\n"
        "        self.file.write(f'FAKE-TQDM closed at {self.n}\\n'); self.file.flush()\n"
    )
    env = dict(os.environ)
    env.pop("ROOTFS_BACKEND", None)
    env.pop("ROOTFS_BASE_DIR", None)
    env["ROOTFS_CONFIG"] = "/nonexistent/config.toml"
    env["PATH"] = f"{_slow_cp(tmp_path, 1.6)}:{os.environ['PATH']}"
    env["FAKE_LIBS"] = str(fake)
    env["TQDM_MARKER"] = str(marker)
    return env


def _generate_and_remove(base_dir: str, prototype: str, env: dict[str, str], tty: bool) -> str:
    out, shown = _rootfs_on_a_terminal(
        ["--base-dir", base_dir, "--backend", "bindtest", "generate", prototype, "--json"], env, tty
    )
    assert out.returncode == 0, shown
    root = json.loads(out.stdout)["root"]
    assert os.path.isfile(os.path.join(root, "etc/hostname"))
    removed = subprocess.run(
        [sys.executable, "-m", "rootfs_core", "--base-dir", base_dir, "remove", root],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        check=False,
    )
    assert removed.returncode == 0, removed.stderr
    return shown


def test_the_command_draws_a_plain_line_on_a_terminal(
    slow_env: dict[str, str], base_dir: str, prototype: str, tmp_path: Path
) -> None:
    """Neither tqdm nor rich importable (both blocked here): one line,
    rewritten in place and cleared at the end; stdout untouched."""
    blocked = tmp_path / "blocked-libs"
    blocked.mkdir()
    (blocked / "tqdm.py").write_text("raise ImportError('blocked for this test')\n")
    (blocked / "rich.py").write_text("raise ImportError('blocked for this test')\n")
    env = dict(slow_env, PYTHONPATH=f"{blocked}:{slow_env['PYTHONPATH']}")
    shown = _generate_and_remove(base_dir, prototype, env, tty=True)
    assert "\rrootfs: copying etc: 0 B of " in shown
    assert "(0%)" in shown
    assert shown.endswith("\r\x1b[K")  # cleared: nothing of it is left on the screen


def test_tqdm_is_used_on_a_terminal_and_never_loaded_without_one(
    slow_env: dict[str, str], base_dir: str, prototype: str
) -> None:
    env = dict(slow_env, PYTHONPATH=f"{slow_env['FAKE_LIBS']}:{slow_env['PYTHONPATH']}")
    marker = Path(slow_env["TQDM_MARKER"])
    shown = _generate_and_remove(base_dir, prototype, env, tty=False)
    assert shown == ""  # no terminal: nothing drawn...
    assert not marker.exists()  # ...and tqdm never imported
    shown = _generate_and_remove(base_dir, prototype, env, tty=True)
    assert marker.exists()
    assert "FAKE-TQDM rootfs: copying etc " in shown
    assert "FAKE-TQDM closed at " in shown
    assert "rootfs: copying etc:" not in shown  # tqdm's bar, not the plain line
