"""How the command reports that no backend works: one line per backend with
its reason, readable at 80 columns, without the paths of the throw-away
instances the probes ran in. Run in-process (``cli.main``) with a registry
of failing backends only, since this host's real backends work."""

from __future__ import annotations

import importlib
import json
import types

import pytest

from rootfs_core import cli
from rootfs_core.context import BuildContext
from rootfs_core.hookspecs import BackendInfo, Probe, hookimpl
from rootfs_core.registry import Registry


def _mount_fails() -> types.ModuleType:
    """A backend whose probe mounts a filesystem type no kernel has: the
    error names the probe's root, ``BASE/<random id>/root``."""
    module = types.ModuleType("mount_fails")

    @hookimpl
    def rootfs_backend_info() -> BackendInfo:
        return BackendInfo(priority=300, summary="mounts what does not exist")

    @hookimpl
    def rootfs_probe(ctx: BuildContext) -> Probe:
        ctx.mount("none", ctx.root, "no-such-filesystem-type")
        return Probe.ok()

    @hookimpl
    def rootfs_generate(ctx: BuildContext) -> None:
        raise AssertionError("never selected")

    for hook in (rootfs_backend_info, rootfs_probe, rootfs_generate):
        setattr(module, hook.__name__, hook)
    return module


@pytest.fixture
def failing_only(discovery_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = Registry(
        {
            "mount-fails": ("mount_fails", _mount_fails()),
            "refuses": (
                "rootfs_testbackends.refuses",
                importlib.import_module("rootfs_testbackends.refuses"),
            ),
        },
        {"import-fails": ("broken_backend", "ImportError: " + "a rather long explanation " * 6)},
    )
    monkeypatch.setattr(Registry, "discover", classmethod(lambda cls: registry))
    monkeypatch.delenv("ROOTFS_BACKEND", raising=False)
    monkeypatch.setenv("ROOTFS_CONFIG", "/nonexistent/config.toml")


def test_no_supported_backend_is_one_line_per_backend_at_80_columns(
    failing_only: None, base_dir: str, prototype: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--base-dir", base_dir, "generate", prototype]) == 1
    out = capsys.readouterr()
    assert out.out == ""
    head, *rest = out.err.splitlines()
    assert head == "rootfs: ErrNoSupportedBackend: no installed backend works here:"
    starts = [line.split(":")[0].strip() for line in rest if not line.startswith("      ")]
    assert starts == ["refuses", "mount-fails", "import-fails"]  # each once, by priority, broken last
    assert all(line.startswith("  ") for line in rest)
    assert all(len(line) <= 80 for line in out.err.splitlines())
    assert "  refuses: this host lacks the imaginary filesystem" in rest
    assert base_dir not in out.err  # no path of a probe's throw-away instance
    assert "cannot mount none on <probe>/root" in out.err


def test_no_supported_backend_as_json(
    failing_only: None, base_dir: str, prototype: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Scripts get the same, one backend a line, unwrapped."""
    assert cli.main(["--base-dir", base_dir, "generate", prototype, "--json"]) == 1
    out = capsys.readouterr()
    data = json.loads(out.out)
    assert set(data) == {"error", "message"} and data["error"] == "ErrNoSupportedBackend"
    lines = data["message"].splitlines()
    assert lines[0] == "no installed backend works here:"
    assert [line.split(":")[0] for line in lines[1:]] == ["  refuses", "  mount-fails", "  import-fails"]
    assert base_dir not in data["message"]


def test_a_forced_backend_that_cannot_work_has_no_probe_paths_either(
    failing_only: None, base_dir: str, prototype: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--base-dir", base_dir, "--backend", "mount-fails", "generate", prototype]) == 1
    err = capsys.readouterr().err
    assert err.startswith("rootfs: ErrBackendUnsupported: backend 'mount-fails' cannot work here: ")
    assert "<probe>/root" in err and base_dir not in err


def test_rootfs_backends_shows_reasons_without_probe_paths(
    failing_only: None, base_dir: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["--base-dir", base_dir, "backends"]) == 0
    text = capsys.readouterr().out
    assert "unsupported: ErrBindMountRoot: cannot mount none on <probe>/root" in text
    assert base_dir not in text
    assert cli.main(["--base-dir", base_dir, "backends", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert "<probe>/root" in rows["mount-fails"]["reason"] and base_dir not in rows["mount-fails"]["reason"]
