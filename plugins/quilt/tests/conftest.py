"""Fixtures of the quilt tests. The core's fixtures (``base_dir``,
``prototype``, ``busybox_prototype``, ``leak_guard``) come from its pytest11
entry point."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import pytest
from quilt_support import MakePrototype

from rootfs_core import RootFS
from rootfs_core.testing.checks import tree_checksum
from rootfs_core.testing.fixtures import remove_scratch, scratch_dir


@pytest.fixture
def quilt(base_dir: str) -> RootFS:
    """A RootFS forced to the quilt, on the checked base directory."""
    if os.geteuid() != 0:
        pytest.skip("the quilt needs real bind mounts: run as root")
    return RootFS(base_dir, backend="quilt")


@pytest.fixture
def make_prototype() -> Iterator[MakePrototype]:
    """``make_prototype(build)``: a prototype filled by ``build(path)``; each
    one must be unchanged at teardown, like the core's ``prototype``."""
    made: list[tuple[str, str, str]] = []

    def make(build: Callable[[str], object]) -> str:
        holder = scratch_dir("quilt-proto-")
        path = os.path.join(holder, "prototype")
        os.mkdir(path)
        build(path)
        made.append((holder, path, tree_checksum(path)))
        return path

    yield make
    try:
        for _, path, checksum in made:
            assert tree_checksum(path) == checksum, f"prototype {path} was modified"
    finally:
        for holder, _, _ in made:
            remove_scratch(holder)
