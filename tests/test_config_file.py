"""The configuration file: only a small regular file is ever read, and an
empty variable counts as unset."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rootfs_core import ErrorId, RootFSError, selection
from rootfs_core.selection import forced_backend, load_config

# load_config in a child with a time and a memory limit: a FIFO (a hang) or
# /dev/zero (a read until MemoryError) must fail the test, not the run.
_CHILD = textwrap.dedent(
    """
    import resource
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
    from rootfs_core.errors import RootFSError
    from rootfs_core.selection import load_config
    try:
        print(repr(load_config()))
    except RootFSError as err:
        print(err.error_id.name)
        print(err)
    """
)


def _load_in_child(path: str) -> list[str]:
    env = dict(os.environ, ROOTFS_CONFIG=path)
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, timeout=20, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "/dev/null", "directory"])
def test_a_file_that_is_not_regular_is_refused(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        path = str(tmp_path / "config.toml")
        os.mkfifo(path)
    elif kind == "directory":
        path = str(tmp_path)
    else:
        path = kind
    lines = _load_in_child(path)
    assert lines[0] == "ErrConfig", lines
    assert path in lines[1]
    assert "not a regular file" in lines[1]


def test_a_symlink_to_a_device_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "config.toml"
    link.symlink_to("/dev/zero")
    lines = _load_in_child(str(link))
    assert lines[0] == "ErrConfig", lines
    assert str(link) in lines[1]


def test_a_file_over_64_kib_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    tail = b'\nbackend = "crashy"\n'
    config.write_bytes(b"#" * (64 * 1024 - len(tail)) + tail)  # exactly 64 KiB: read
    monkeypatch.setenv("ROOTFS_CONFIG", str(config))
    assert load_config() == {"backend": "crashy"}
    config.write_bytes(b"#" * (64 * 1024 + 1 - len(tail)) + tail)  # one byte more: refused
    with pytest.raises(RootFSError) as info:
        load_config()
    assert info.value.error_id is ErrorId.ErrConfig
    assert str(config) in str(info.value)
    assert "64 KiB" in str(info.value)


@pytest.mark.parametrize("missing", ["config.toml", "no-such-dir/config.toml"])
def test_a_missing_file_means_no_configuration(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, missing: str
) -> None:
    monkeypatch.setenv("ROOTFS_CONFIG", str(tmp_path / missing))
    assert load_config() == {}


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = tmp_path / "config.toml"
    default.write_text('backend = "crashy"\nbase_dir = "/srv/roots"\n')
    monkeypatch.setattr(selection, "DEFAULT_CONFIG", str(default))
    monkeypatch.setenv("ROOTFS_CONFIG", "")  # the default path, not "no configuration"
    monkeypatch.setenv("ROOTFS_BACKEND", "")  # the configuration's choice, not ""
    assert load_config() == {"backend": "crashy", "base_dir": "/srv/roots"}
    assert forced_backend(None) == "crashy"
    assert forced_backend("bindtest") == "bindtest"


@pytest.mark.parametrize("text", ["backend = 'x'\nfuture_key = 'y'\n", "[future_key]\nx = 1\n"])
def test_an_unknown_key_is_named_with_the_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    monkeypatch.setenv("ROOTFS_CONFIG", str(config))
    with pytest.raises(RootFSError) as info:
        load_config()
    assert info.value.error_id is ErrorId.ErrConfig
    assert "future_key" in str(info.value)
    assert str(config) in str(info.value)
