"""The probe and entry-point caches are believed only if no other user can
have written them: a cache directory another user controls would let that
user choose root's backend and the modules root imports."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rootfs_core import RootFS
from rootfs_core.registry import EntryPointCache, Registry

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plants files owned by another user")

NOBODY = 65534


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)
    return path


def _private_file(path: Path, text: str) -> Path:
    path.write_text(text)
    os.chmod(path, 0o600)
    return path


def _symlinked(path: Path) -> None:
    """Move ``path`` aside (still trusted) and put a symlink to it in its place."""
    aside = path.with_name(path.name + ".real")
    path.rename(aside)
    path.symlink_to(aside)


def _snapshot(top: Path) -> dict[str, bytes | None]:
    found: dict[str, bytes | None] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames:
            found[os.path.join(dirpath, name)] = None
        for name in filenames:
            path = os.path.join(dirpath, name)
            found[path] = None if os.path.islink(path) else Path(path).read_bytes()
    return found


# How a planted cache is made untrusted: (what to do to (top, kind dir, file),
# which path the warning names, a word of its reason, whether the directory
# holding the file is untrusted (then nothing may be written there either)).
Untrust = Callable[[Path, Path, Path], None]
WAYS: dict[str, tuple[Untrust, str, str, bool]] = {
    "top owned by nobody": (lambda t, k, f: os.chown(t, NOBODY, NOBODY), "top", "uid 65534", True),
    "top mode 0777": (lambda t, k, f: os.chmod(t, 0o777), "top", "writable", True),
    "top mode 1777": (lambda t, k, f: os.chmod(t, 0o1777), "top", "writable", True),
    "top a symlink": (lambda t, k, f: _symlinked(t), "top", "symlink", True),
    "kind owned by nobody": (lambda t, k, f: os.chown(k, NOBODY, NOBODY), "kind", "uid 65534", True),
    "kind mode 0770": (lambda t, k, f: os.chmod(k, 0o770), "kind", "writable", True),
    "kind a symlink": (lambda t, k, f: _symlinked(k), "kind", "symlink", True),
    "file owned by nobody": (lambda t, k, f: os.chown(f, NOBODY, NOBODY), "file", "uid 65534", False),
    "file mode 0666": (lambda t, k, f: os.chmod(f, 0o666), "file", "writable", False),
    "file a symlink": (lambda t, k, f: _symlinked(f), "file", "symlink", False),
}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "rootfs" and r.levelno == logging.WARNING]


def _plant_verdict(top: Path, base_dir: str, registry: Registry, name: str) -> tuple[Path, Path]:
    """A cached "supported" verdict for backend ``name``, as rootfs would write it."""
    kind = _private_dir(top / "probes")
    backend = registry.backends[name]
    record = {"boot_id": _boot_id(), "target": backend.target, "version": backend.version, "supported": True}
    planted = kind / f"{name}-{os.stat(base_dir).st_dev}-{os.geteuid()}.json"
    return kind, _private_file(planted, json.dumps(record | {"reason": None}))


def test_a_trusted_planted_verdict_is_believed(
    base_dir: str, registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The control: the planted verdict below is well made, so only trust decides."""
    top = _private_dir(tmp_path / "cache")
    monkeypatch.setenv("ROOTFS_CACHE", str(top))
    _plant_verdict(top, base_dir, registry, "refuses")
    assert RootFS(base_dir, registry=registry).probe("refuses").supported is True


@pytest.mark.parametrize("way", sorted(WAYS))
def test_an_untrusted_verdict_is_ignored_and_nothing_written(
    base_dir: str,
    registry: Registry,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    way: str,
) -> None:
    untrust, named, reason, dir_untrusted = WAYS[way]
    caplog.set_level(logging.WARNING, logger="rootfs")
    top = _private_dir(tmp_path / "cache")
    monkeypatch.setenv("ROOTFS_CACHE", str(top))
    kind, planted = _plant_verdict(top, base_dir, registry, "refuses")
    untrust(top, kind, planted)
    before = _snapshot(tmp_path)

    assert RootFS(base_dir, registry=registry).probe("refuses").supported is False  # really probed
    assert RootFS(base_dir, registry=registry).probe("bindtest").supported is True  # a success...
    if dir_untrusted:
        assert _snapshot(tmp_path) == before  # ...not written where another user could have
    (warning,) = _warnings(caplog)  # one warning, however often the cache is asked
    assert str({"top": top, "kind": kind, "file": planted}[named]) in warning
    assert reason in warning


def test_created_cache_directories_are_private(
    base_dir: str, registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    top = tmp_path / "a" / "b" / "cache"
    monkeypatch.setenv("ROOTFS_CACHE", str(top))
    old = os.umask(0o022)
    try:
        assert RootFS(base_dir, registry=registry).probe("bindtest").supported is True
    finally:
        os.umask(old)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", top, top / "probes"):
        assert stat.S_IMODE(os.lstat(directory).st_mode) == 0o700, directory
    (cached,) = (top / "probes").iterdir()
    assert stat.S_IMODE(os.lstat(cached).st_mode) == 0o600
    # and what it wrote is believed the next time (forged to prove it)
    cached.write_text(cached.read_text().replace('"supported": true', '"supported": false'))
    assert RootFS(base_dir, registry=registry).probe("bindtest").supported is False


def _plant_entry_point(top: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path, Path]:
    """An entry-point cache naming a module that nothing installed declares."""
    modules = tmp_path / "modules"
    modules.mkdir()
    module = f"rootfs_planted_{tmp_path.name.replace('-', '_')}"
    (modules / f"{module}.py").write_text("PLANTED = True\n")
    monkeypatch.syspath_prepend(str(modules))
    kind = _private_dir(top / "entry-points")
    record = {"key": EntryPointCache._key(), "targets": {"planted": module}, "versions": {}}
    name = os.path.basename(EntryPointCache().path or f"{os.geteuid()}.json")
    return module, kind, _private_file(kind / name, json.dumps(record))


def test_a_trusted_planted_entry_point_is_imported(
    discovery_path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The control: the planted entry point below is well made, so only trust decides."""
    top = _private_dir(tmp_path / "cache")
    monkeypatch.setenv("ROOTFS_CACHE", str(top))
    module, _, _ = _plant_entry_point(top, tmp_path, monkeypatch)
    try:
        assert "planted" in Registry.discover().backends
        assert module in sys.modules
    finally:
        sys.modules.pop(module, None)


@pytest.mark.parametrize("way", sorted(WAYS))
def test_an_untrusted_entry_point_is_never_imported(
    discovery_path: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    way: str,
) -> None:
    untrust, named, reason, dir_untrusted = WAYS[way]
    caplog.set_level(logging.WARNING, logger="rootfs")
    top = _private_dir(tmp_path / "cache")
    monkeypatch.setenv("ROOTFS_CACHE", str(top))
    module, kind, planted = _plant_entry_point(top, tmp_path, monkeypatch)
    untrust(top, kind, planted)
    before = _snapshot(top)
    try:
        registry = Registry.discover()
        assert module not in sys.modules
        assert "planted" not in registry.backends
        assert registry.backends["bindtest"].error is None  # found by a real scan instead
    finally:
        sys.modules.pop(module, None)
    if dir_untrusted:
        assert _snapshot(top) == before
    (warning,) = _warnings(caplog)
    assert str({"top": top, "kind": kind, "file": planted}[named]) in warning
    assert reason in warning


def test_what_an_earlier_version_wrote_is_still_trusted(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Directories 0755 and files 0644, all root's, as the cache was written
    before: trusted, so an upgrade brings no warning and no re-probe."""
    from rootfs_core.selection import CacheDir

    top = tmp_path / "cache"
    (top / "probes").mkdir(parents=True)
    for path in (top, top / "probes"):
        os.chmod(path, 0o755)
    (top / "probes" / "x.json").write_text("{}")
    os.chmod(top / "probes" / "x.json", 0o644)
    monkeypatch.setenv("ROOTFS_CACHE", str(top))
    assert CacheDir("probes").read("x.json") == b"{}"
