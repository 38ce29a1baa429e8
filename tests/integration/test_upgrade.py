"""Instances made by an older rootfs stay listable and removable.

The older rootfs is the real one: the release this change was made on
(commit ``OLD``), taken out of the repository's history and run from its
own tree, with its own backends, on a base directory this version then
opens. Its records have three fields a step, no ``removing`` line, its base
directory is no private mount, and its FUSE daemons were never journaled.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator

import pytest

from rootfs_core import RootFS
from rootfs_core.testing.checks import instance_mounts

OLD = "0f44ce2"  # main before the "safe on real hosts" change
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGINS = ("overlayfs", "quilt", "aufs", "fuse-overlayfs")


@pytest.fixture(scope="module")
def old_tree() -> Iterator[str]:
    """The old release's source tree, or a skip saying why it is missing."""
    try:
        archive = subprocess.run(
            ["git", "-C", REPO, "archive", OLD, "rootfs_core", "plugins"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the old release {OLD} is not in this checkout's history ({exc})")
    with tempfile.TemporaryDirectory(prefix="rootfs-old-") as holder:
        path = os.path.join(holder, "archive.tar")
        with open(path, "wb") as fh:
            fh.write(archive)
        with tarfile.open(path) as tar:
            tar.extractall(holder, filter="data")
        yield holder


def _old_generate(tree: str, base: str, backend: str, prototype: str) -> str:
    path = [tree, *(os.path.join(tree, "plugins", p) for p in PLUGINS)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path), ROOTFS_CACHE="")
    code = "import sys; from rootfs_core.cli import main; sys.exit(main())"
    proc = subprocess.run(
        [sys.executable, "-c", code, "--base-dir", base, "--backend", backend, "generate", prototype],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,  # python -c puts the working directory first on sys.path
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_instances_of_the_old_release_are_listed_and_removed(
    old_tree: str, base_dir: str, prototype: str
) -> None:
    backends = ["overlayfs", "quilt"]
    if RootFS(base_dir).probe("fuse-overlayfs").supported:
        backends.append("fuse-overlayfs")
    roots = {name: _old_generate(old_tree, base_dir, name, prototype) for name in backends}
    with open(
        os.path.join(base_dir, ".rootfs/records", os.path.basename(os.path.dirname(roots["quilt"])) + ".json")
    ) as fh:
        assert fh.readlines()[1].count(",") == 2, "the old release writes three fields a step"
    rfs = RootFS(base_dir)
    listed = {i.backend: (i.root, i.state) for i in rfs.instances()}
    assert listed == {name: (root, "ready") for name, root in roots.items()}
    for name, root in roots.items():
        with open(os.path.join(root, "etc", "written"), "w") as fh:
            fh.write(name)
        assert rfs.remove(root) is True, name
    assert rfs.instances() == []
    assert instance_mounts(base_dir) == []
    assert os.listdir(base_dir) == [".rootfs"]
