"""Which backend is used: forced (argument, env, config) or the best supported."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.registry import Registry


def test_highest_supported_is_selected(rfs: RootFS) -> None:
    # refuses (390) and probe-raises (380) are higher but unsupported.
    assert rfs.selected_backend() == "bindtest"


def test_backends_lists_all_with_reasons(rfs: RootFS) -> None:
    by_name = {s.name: s for s in rfs.backends()}
    assert set(by_name) == {"bindtest", "crashy", "refuses", "probe-raises", "import-fails"}
    assert by_name["bindtest"].supported and by_name["bindtest"].selected
    assert [s.name for s in rfs.backends() if s.selected] == ["bindtest"]
    assert by_name["refuses"].reason == "this host lacks the imaginary filesystem"
    assert not by_name["probe-raises"].supported
    assert "probe exploded" in (by_name["probe-raises"].reason or "")
    assert by_name["import-fails"].reason == "ImportError: test"
    assert by_name["import-fails"].priority is None
    assert [s.priority for s in rfs.backends()][:4] == [390, 380, 120, 110]


def test_forced_by_argument(base_dir: str, registry: Registry) -> None:
    assert RootFS(base_dir, registry=registry, backend="crashy").selected_backend() == "crashy"


def test_forced_by_env_and_argument_wins(
    base_dir: str, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROOTFS_BACKEND", "crashy")
    assert RootFS(base_dir, registry=registry).selected_backend() == "crashy"
    assert RootFS(base_dir, registry=registry, backend="bindtest").selected_backend() == "bindtest"


def test_forced_by_config_file(
    base_dir: str, registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text('backend = "crashy"\n')
    monkeypatch.setenv("ROOTFS_CONFIG", str(config))
    monkeypatch.delenv("ROOTFS_BACKEND", raising=False)
    assert RootFS(base_dir, registry=registry).selected_backend() == "crashy"
    monkeypatch.setenv("ROOTFS_BACKEND", "bindtest")
    assert RootFS(base_dir, registry=registry).selected_backend() == "bindtest"


@pytest.mark.parametrize("text", ["backend = 3\n", "bakend = 'x'\n", "not toml ["])
def test_bad_config_file(
    base_dir: str, registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(text)
    monkeypatch.setenv("ROOTFS_CONFIG", str(config))
    monkeypatch.delenv("ROOTFS_BACKEND", raising=False)
    with pytest.raises(RootFSError) as info:
        RootFS(base_dir, registry=registry)
    assert info.value.error_id is ErrorId.ErrConfig


def test_forced_unsupported_fails_with_reason(base_dir: str, registry: Registry, prototype: str) -> None:
    rfs = RootFS(base_dir, registry=registry, backend="refuses")
    with pytest.raises(RootFSError) as info:
        rfs.generate(prototype)
    assert info.value.error_id is ErrorId.ErrBackendUnsupported
    assert "imaginary filesystem" in str(info.value)


@pytest.mark.parametrize("name", ["nonexistent", "import-fails"])
def test_forced_unknown_or_broken(base_dir: str, registry: Registry, prototype: str, name: str) -> None:
    rfs = RootFS(base_dir, registry=registry, backend=name)
    with pytest.raises(RootFSError) as info:
        rfs.generate(prototype)
    assert info.value.error_id is ErrorId.ErrUnknownBackend
    assert name in str(info.value)


def test_no_supported_backend_lists_every_reason(base_dir: str, discovery_path: str, prototype: str) -> None:
    import importlib

    only_bad = Registry(
        {"refuses": ("x:", importlib.import_module("rootfs_testbackends.refuses"))},
        {"import-fails": ("y", "ImportError: nope")},
    )
    with pytest.raises(RootFSError) as info:
        RootFS(base_dir, registry=only_bad).generate(prototype)
    assert info.value.error_id is ErrorId.ErrNoSupportedBackend
    assert "refuses: this host lacks the imaginary filesystem" in str(info.value)
    assert "import-fails: ImportError: nope" in str(info.value)
    assert os.listdir(base_dir) == [".rootfs"]


def test_probe_leaves_nothing(rfs: RootFS, base_dir: str) -> None:
    rfs.backends()  # probes every backend for real, with mounts
    assert sorted(os.listdir(base_dir)) == [".rootfs"]


def test_real_discovery_isolates_broken_plugins(base_dir: str, discovery_path: str) -> None:
    """Through stevedore and the real entry points: the plugin that fails to
    import and the one with invalid hooks are reported; the others work."""
    registry = Registry.discover()
    assert "ImportError" in (registry.backends["import-fails"].error or "")
    assert "invalid hooks" in (registry.backends["bad-hooks"].error or "")
    assert registry.backends["bindtest"].error is None
    rfs = RootFS(base_dir, registry=registry, backend="bindtest")
    names = {s.name: s for s in rfs.backends()}
    assert names["bindtest"].selected
    assert not names["bad-hooks"].supported


def test_a_misspelt_or_unmarked_optional_hook_makes_a_backend_broken(
    base_dir: str, discovery_path: str
) -> None:
    """``rootfs_remov`` (pluggy accepts an implementation of a hook nobody
    specified) and a ``rootfs_remove`` without ``@hookimpl`` (pluggy ignores
    it) would both load and never run: each backend is listed broken, naming
    the hook, never probed, never selected, and cannot be forced."""
    registry = Registry.discover()
    misspelt = registry.backends["misspelt-hook"].error or ""
    assert "unknown hook rootfs_remov (did you mean rootfs_remove?)" in misspelt
    unmarked = registry.backends["unmarked-hook"].error or ""
    assert "rootfs_remove is not marked @hookimpl" in unmarked
    assert registry.backends["bindtest"].error is None  # the others still load
    assert "misspelt-hook" not in [b.name for b in registry.by_priority()]
    rfs = RootFS(base_dir, registry=registry)
    statuses = {s.name: s for s in rfs.backends()}
    assert statuses["misspelt-hook"].supported is False
    assert statuses["misspelt-hook"].reason == misspelt
    assert statuses["misspelt-hook"].priority is None
    # Their probes would pass, and 360 and 355 outrank every in-test backend.
    assert rfs.selected_backend() not in {"misspelt-hook", "unmarked-hook"}
    with pytest.raises(RootFSError) as info:
        RootFS(base_dir, registry=registry, backend="misspelt-hook").selected_backend()
    assert info.value.error_id is ErrorId.ErrUnknownBackend
    assert "rootfs_remov" in str(info.value)


def test_an_optional_hook_of_a_newer_core_is_allowed(base_dir: str, discovery_path: str) -> None:
    """pluggy's own escape hatch: ``@hookimpl(optionalhook=True)`` on a hook
    this core does not specify is not a mistake."""
    import types

    from rootfs_core.hookspecs import hookimpl

    module = types.ModuleType("future_backend")
    bindtest = importlib.import_module("rootfs_testbackends.bindtest")
    for hook in ("rootfs_backend_info", "rootfs_probe", "rootfs_generate"):
        setattr(module, hook, getattr(bindtest, hook))

    @hookimpl(optionalhook=True)
    def rootfs_from_the_future() -> None:
        raise AssertionError("never called")

    module.rootfs_from_the_future = rootfs_from_the_future  # type: ignore[attr-defined]
    module.rootfs_core = importlib.import_module("rootfs_core")  # type: ignore[attr-defined]
    registry = Registry({"future": ("future_backend", module)}, {})
    assert registry.backends["future"].error is None
    assert RootFS(base_dir, registry=registry).selected_backend() == "future"


def test_rootfs_backends_shows_the_misspelt_hook(base_dir: str, discovery_path: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "rootfs_core", "--base-dir", base_dir, "backends", "--json"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        cwd="/",
        env=dict(os.environ, ROOTFS_CONFIG="/nonexistent/config.toml"),
    )
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["misspelt-hook"]["supported"] is False
    assert "unknown hook rootfs_remov" in rows["misspelt-hook"]["reason"]
    assert rows["misspelt-hook"]["selected"] is False


def test_probe_cache_keeps_successes_keyed_by_boot(
    base_dir: str, registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROOTFS_CACHE", str(tmp_path))
    cache = tmp_path / "probes"
    assert RootFS(base_dir, registry=registry).probe("refuses").supported is False
    assert not cache.exists()  # a failure is not remembered: it may be mended any time
    assert RootFS(base_dir, registry=registry).probe("bindtest").supported is True
    (name,) = os.listdir(cache)
    assert name.startswith("bindtest-")
    # A cached verdict is believed (here: forged to "unsupported")...
    path = cache / name
    path.write_text(path.read_text().replace('"supported": true', '"supported": false'))
    assert RootFS(base_dir, registry=registry).probe("bindtest").supported is False
    # ...but not after a reboot (another boot id).
    path.write_text(path.read_text().replace('"boot_id": "', '"boot_id": "x'))
    assert RootFS(base_dir, registry=registry).probe("bindtest").supported is True


def test_entry_points_are_cached_until_the_environment_changes(
    base_dir: str, discovery_path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A second discovery reads the remembered entry points (here forged to
    prove it) until a directory on sys.path changes, as an install does."""
    monkeypatch.setenv("ROOTFS_CACHE", str(tmp_path))
    first = Registry.discover()
    assert first.backends["bindtest"].error is None
    assert "ImportError" in (first.backends["import-fails"].error or "")  # isolated, and remembered
    (cached,) = (tmp_path / "entry-points").iterdir()
    data = json.loads(cached.read_text())
    data["targets"]["forged"] = "rootfs_testbackends.bindtest"
    cached.write_text(json.dumps(data))
    assert "forged" in Registry.discover().backends  # believed while nothing changed
    os.utime(discovery_path)  # as installing or removing a distribution there would
    again = Registry.discover()
    assert "forged" not in again.backends
    assert again.backends["bindtest"].error is None
    assert "ImportError" in (again.backends["import-fails"].error or "")


def test_environments_keep_their_own_entry_points(
    base_dir: str, discovery_path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A call from another environment (another sys.path) keeps its own
    cache file: the first environment's stays, and is still believed."""
    monkeypatch.setenv("ROOTFS_CACHE", str(tmp_path))
    Registry.discover()
    (first,) = (tmp_path / "entry-points").iterdir()
    data = json.loads(first.read_text())
    data["targets"]["forged"] = "rootfs_testbackends.bindtest"
    first.write_text(json.dumps(data))
    with monkeypatch.context() as other:
        other.syspath_prepend(str(tmp_path))  # another environment
        assert "forged" not in Registry.discover().backends
        assert len(list((tmp_path / "entry-points").iterdir())) == 2
    assert "forged" in Registry.discover().backends  # the first one's was not evicted


def test_probe_cache_forgets_a_verdict_when_the_backend_is_upgraded(
    base_dir: str, registry: Registry, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A verdict belongs to one version of the backend's distribution: new
    code behind the same entry point is probed again."""
    monkeypatch.setenv("ROOTFS_CACHE", str(tmp_path))
    registry.backends["bindtest"].version = "1.0"
    assert RootFS(base_dir, registry=registry).probe("bindtest").supported is True
    (path,) = (tmp_path / "probes").iterdir()
    assert json.loads(path.read_text())["version"] == "1.0"
    path.write_text(path.read_text().replace('"supported": true', '"supported": false'))
    assert RootFS(base_dir, registry=registry).probe("bindtest").supported is False  # same version: believed
    registry.backends["bindtest"].version = "1.1"
    assert RootFS(base_dir, registry=registry).probe("bindtest").supported is True  # upgraded: probed again
    assert json.loads(path.read_text())["version"] == "1.1"


def test_discovery_remembers_each_backends_version(
    base_dir: str, discovery_path: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The versions come from the installed metadata on a scan and from the
    entry-point cache after it, the same either way."""
    monkeypatch.setenv("ROOTFS_CACHE", str(tmp_path))
    scanned = {name: b.version for name, b in Registry.discover().backends.items()}
    assert scanned["bindtest"] == "0.0.0"  # the test distribution's dist-info
    assert {name: b.version for name, b in Registry.discover().backends.items()} == scanned
