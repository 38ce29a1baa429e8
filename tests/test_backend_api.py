"""What a backend sees of the core: the journaled primitives and one
read-only helper. The ways around the journal (``ctx.syscalls``,
``ctx.make_instance_dirs``) still work but warn, and the in-tree backends
use none of them, nor the core's internal mount table."""

from __future__ import annotations

import ast
import contextlib
import os
from collections.abc import Iterator

import pytest

from rootfs_core import mounttable, teardown
from rootfs_core.context import BuildContext, RemoveContext, make_instance_dirs
from rootfs_core.store import Record, Store
from rootfs_core.testing.faults import FakeMounts

PLUGINS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "plugins")


@contextlib.contextmanager
def _claimed_context(base_dir: str) -> Iterator[BuildContext]:
    """A claimed instance's context on simulated mounts, with nothing made
    yet; whatever its journal then holds is undone afterwards, and the base
    directory must be left as it was."""
    store = Store(base_dir)
    instance_id = store.new_id()
    record = Record(instance_id, "none", "/", store.root_of(instance_id), 0.0, {})
    fake = FakeMounts()
    with store.claim_new(record) as claim:
        built = BuildContext(record, fake, store)
        yield built
        teardown.undo(record.steps, built.instance_dir, fake)
        store.delete(instance_id)
        claim.finish()
    assert os.listdir(base_dir) == [".rootfs"]


@pytest.fixture
def ctx(base_dir: str) -> Iterator[BuildContext]:
    """A journaled instance on simulated mounts, its directories made."""
    with _claimed_context(base_dir) as built:
        make_instance_dirs(built)
        yield built


def test_filesystem_of_answers_as_the_mount_table_does(ctx: BuildContext, base_dir: str) -> None:
    fstype, point = ctx.filesystem_of(ctx.instance_dir)
    assert (fstype, point) == mounttable.filesystem_of(base_dir)
    assert fstype and os.path.isabs(point)


def test_the_raw_syscalls_still_work_but_warn(ctx: BuildContext) -> None:
    with pytest.warns(DeprecationWarning, match="bypasses the journal"):
        raw = ctx.syscalls
    assert isinstance(raw, FakeMounts)
    remove = RemoveContext(ctx._record, raw)
    with pytest.warns(DeprecationWarning, match="bypasses the journal"):
        assert remove.syscalls is raw


def test_making_the_instance_dirs_is_the_cores_job(base_dir: str) -> None:
    with _claimed_context(base_dir) as built:
        with pytest.warns(DeprecationWarning, match="the core makes"):
            built.make_instance_dirs()
        assert os.path.isdir(built.root)  # still made, and journaled
        assert [step.op for step in built._record.steps] == ["dir", "dir"]


def _backend_sources() -> list[str]:
    found = []
    for plugin in sorted(os.listdir(PLUGINS)):
        for package in sorted(os.listdir(os.path.join(PLUGINS, plugin))):
            if package.startswith("rootfs_") and not package.endswith(".egg-info"):
                folder = os.path.join(PLUGINS, plugin, package)
                found += [os.path.join(folder, n) for n in sorted(os.listdir(folder)) if n.endswith(".py")]
    return found


def test_in_tree_backends_stay_on_the_backend_api() -> None:
    """No import of the core's mount table, no ``.syscalls``, no
    ``make_instance_dirs`` in any in-tree backend's code."""
    sources = _backend_sources()
    assert len(sources) >= 4, sources
    offences = []
    for path in sources:
        with open(path, encoding="utf-8") as fh:
            tree = ast.parse(fh.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "rootfs_core.mounttable":
                offences.append(f"{path}: imports rootfs_core.mounttable")
            elif isinstance(node, ast.Attribute) and node.attr in ("syscalls", "make_instance_dirs"):
                offences.append(f"{path}:{node.lineno}: .{node.attr}")
    assert offences == []
