"""What the documentation and the packaging files promise, checked against
the files themselves (the wheels are built and checked by ``tox -e
packaging``: .ci/check_dists.py)."""

from __future__ import annotations

import configparser
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECTS = [ROOT / "pyproject.toml", *sorted(ROOT.glob("plugins/*/pyproject.toml"))]
PLUGINS = sorted(p.parent.name for p in PYPROJECTS[1:])


def _tox() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    return parser


def test_every_distribution_declares_its_licence_as_an_spdx_expression() -> None:
    assert len(PYPROJECTS) == 5
    for path in PYPROJECTS:
        data = tomllib.loads(path.read_text())
        assert data["project"]["license"] == "Apache-2.0", path
        assert "setuptools>=77" in data["build-system"]["requires"], path  # the first to accept it


def test_tox_builds_and_checks_every_distribution() -> None:
    tox = _tox()
    assert "packaging" in [e.strip() for e in tox["tox"]["envlist"].split(",")]
    env = tox["testenv:packaging"]
    assert {"build", "twine"} <= set(env["deps"].split())
    assert ".ci/check_dists.py" in env["commands"]
    assert (ROOT / ".ci/check_dists.py").is_file()


def test_the_integration_envs_install_every_real_backend() -> None:
    tox = _tox()
    for name in ("testenv:integration", "testenv:integration-shared"):
        installed = tox[name]["commands_pre"]
        for plugin in PLUGINS:
            assert f"{{toxinidir}}/plugins/{plugin}" in installed, (name, plugin)


def test_readmes_say_what_is_true() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "the only one created on first use" in readme
    assert "plugins/{overlayfs,quilt,aufs,fuse-overlayfs}/" in readme
    assert "rootfs unit gc > /etc/systemd/system/rootfs-gc.service" in readme
    assert "docs/configuration.md" in readme
    quilt = (ROOT / "plugins/quilt/README.md").read_text()
    assert "pip install -e" not in quilt and "pip install ./plugins/quilt" in quilt
    # `rootfs backends` prints "supported" or "unsupported: <why>", in these columns
    aufs = (ROOT / "plugins/aufs/README.md").read_text()
    assert re.search(r"^  aufs +250  rootfs-aufs +unsupported: no aufs filesystem in this kernel", aufs, re.M)
    assert "not supported:" not in aufs
