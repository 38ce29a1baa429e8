"""Every step of generate and remove made to fail once, and a root in use:
a failed generate leaves nothing, a failed remove keeps its record and a
second remove finishes the job."""

from __future__ import annotations

import os

import pytest

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.syscalls import MS_PRIVATE
from rootfs_core.testing.checks import tree_checksum
from rootfs_core.testing.faults import Call, FaultySyscalls, probed_rootfs
from rootfs_core.testing.fixtures import assert_base_dir_clean


def probed(base_dir: str) -> tuple[RootFS, FaultySyscalls]:
    return probed_rootfs(base_dir, "overlayfs")


def expected_error(call: Call, root: str) -> ErrorId:
    """The id a failure of ``call`` must be reported with."""
    target = str(call.args[1] if call.name == "mount" else call.args[0])
    if call.name == "mount":
        return ErrorId.ErrBindMountRoot if target == root else ErrorId.ErrCreateTempDir
    if call.name == "umount":
        return ErrorId.ErrUnmountRoot if target == root else ErrorId.ErrUnmountSubdir
    if call.name in ("rmdir", "remove_tree"):
        return ErrorId.ErrRemoveMountDir
    return ErrorId.ErrCreateMountDir if target == root else ErrorId.ErrCreateTempDir


def _kind(call: Call) -> str:
    """A call's name, ``make-private`` for a mount(2) that only takes a
    mount out of its peer group (MS_PRIVATE, no source, no type, no data)."""
    if call.name == "mount" and call.args[3] == MS_PRIVATE:
        assert call.args[0] == call.args[2] == call.args[4] == "", call
        return "make-private"
    return call.name


@pytest.mark.parametrize("size", [None, "16M"])
def test_generate_makes_exactly_its_plan(base_dir: str, prototype: str, size: str | None) -> None:
    rfs, faulty = probed(base_dir)
    root = rfs.generate(prototype, size=size)
    instance = os.path.dirname(root)
    layer = f"{instance}/layer/" if size else f"{instance}/"
    plan = [(_kind(c), c.args[1] if c.name == "mount" else c.args[0]) for c in faulty.calls]
    # Every mount is made private at once, before anything is mounted on it
    # (the base directory was set up by the probe, in the same RootFS).
    tmpfs = [
        ("mkdir", f"{instance}/layer"),
        ("chmod", f"{instance}/layer"),
        ("mount", f"{instance}/layer"),
        ("make-private", f"{instance}/layer"),
    ]
    assert plan == [
        ("mkdir", instance),
        ("chmod", instance),
        ("mkdir", root),
        ("chmod", root),
        *(tmpfs if size else []),
        ("mkdir", f"{layer}upper"),
        ("chown", f"{layer}upper"),
        ("chmod", f"{layer}upper"),
        ("mkdir", f"{layer}work"),
        ("chmod", f"{layer}work"),
        ("mount", root),
        ("make-private", root),
    ]
    faulty.calls.clear()
    rfs.remove(root)
    # Every mount goes first; with size, upper and work vanish with their
    # tmpfs, so there is nothing left to delete in them.
    deletes = [("remove_tree", f"{layer}work"), ("remove_tree", f"{layer}upper")]
    assert [(c.name, c.args[0]) for c in faulty.calls] == [
        ("umount", root),
        *([("umount", f"{instance}/layer"), ("rmdir", f"{instance}/layer")] if size else deletes),
        ("rmdir", root),
        ("rmdir", instance),
    ]


@pytest.mark.parametrize("size", [None, "16M"])
def test_generate_fails_cleanly_at_every_step(base_dir: str, prototype: str, size: str | None) -> None:
    rfs, faulty = probed(base_dir)
    clean_root = rfs.generate(prototype, size=size)
    calls = list(faulty.calls)
    rfs.remove(clean_root)
    before = tree_checksum(prototype)
    for number, call in enumerate(calls, 1):
        rfs, faulty = probed(base_dir)
        faulty.fail_on = {number}
        with pytest.raises(RootFSError) as exc:
            rfs.generate(prototype, size=size)
        wanted = expected_error(call, clean_root)
        assert exc.value.error_id is wanted, f"call {number} ({call.name}): {exc.value}"
        assert exc.value.cleanup_errors == []
        assert rfs.instances() == []
        assert_base_dir_clean(base_dir)
        assert tree_checksum(prototype) == before
