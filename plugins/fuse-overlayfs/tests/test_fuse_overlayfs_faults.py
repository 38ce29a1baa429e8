"""Every changing call of generate and remove made to fail once, as root: a
failed generate leaves nothing (no directory, mount, record or daemon); a
failed remove keeps its record and a second remove finishes the job. Also the
conformance suite of rootfs-core, on real and on simulated mounts."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from conftest import live_daemons

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.hookspecs import BAND_OTHER_UNION
from rootfs_core.testing.conformance import BackendConformance
from rootfs_core.testing.faults import Call, FaultySyscalls, probed_rootfs
from rootfs_core.testing.fixtures import assert_base_dir_clean

pytestmark = pytest.mark.usefixtures("as_root")


class TestConformance(BackendConformance):
    backend = "fuse-overlayfs"
    band = BAND_OTHER_UNION

    def assert_nothing_else_left(self, root: str) -> None:
        assert live_daemons(root) == [], "a fuse-overlayfs daemon outlived its root"


class TestConformanceSimulated(BackendConformance):
    backend = "fuse-overlayfs"
    band = BAND_OTHER_UNION
    real_mounts = False


def probed(base_dir: str) -> tuple[RootFS, FaultySyscalls]:
    return probed_rootfs(base_dir, "fuse-overlayfs")


def expected_error(call: Call, root: str) -> ErrorId:
    """The id a failure of ``call`` must be reported with."""
    target = str(call.args[1] if call.name == "run_mount_program" else call.args[0])
    if call.name == "run_mount_program":
        return ErrorId.ErrBindMountRoot
    if call.name == "fuse_unmount":
        return ErrorId.ErrUnmountRoot
    if call.name in ("rmdir", "remove_tree"):
        return ErrorId.ErrRemoveMountDir
    return ErrorId.ErrCreateMountDir if target == root else ErrorId.ErrCreateTempDir


def protections(path: str) -> list[str]:
    """The -o words for the protections of the mount holding ``path``, in
    the order the core lists them (``BuildContext.mount_options``)."""
    flags = os.statvfs(path).f_flag
    return [name for bit, name in NAMED_PROTECTIONS if flags & bit]


NAMED_PROTECTIONS = ((os.ST_NOSUID, "nosuid"), (os.ST_NODEV, "nodev"), (os.ST_NOEXEC, "noexec"))


def test_generate_and_remove_make_exactly_their_plan(base_dir: str, prototype: str) -> None:
    """A FUSE program mounts, so no mount(2) call is made (nor a make-private
    one after it: the program's mount is its own, and the daemon is looked up
    in /proc, no changing call either). On remove the core unmounts, waits
    for the journaled daemon (no call), then deletes the layers, last first."""
    rfs, faulty = probed(base_dir)
    root = rfs.generate(prototype)
    instance = os.path.dirname(root)
    plan = [(c.name, c.args[1] if c.name == "run_mount_program" else c.args[0]) for c in faulty.calls]
    assert plan == [
        ("mkdir", instance),
        ("chmod", instance),
        ("mkdir", root),
        ("chmod", root),
        ("mkdir", f"{instance}/upper"),
        ("chown", f"{instance}/upper"),
        ("chmod", f"{instance}/upper"),
        ("mkdir", f"{instance}/work"),
        ("chmod", f"{instance}/work"),
        ("run_mount_program", root),
    ]
    [argv] = [c.args[0] for c in faulty.calls if c.name == "run_mount_program"]
    assert argv == [
        "fuse-overlayfs",
        "-o",
        ",".join(
            [
                f"lowerdir={prototype}",
                f"upperdir={instance}/upper",
                f"workdir={instance}/work",
                *protections(prototype),
            ]
        ),
        root,
    ]
    faulty.calls.clear()
    assert rfs.remove(root) is True
    assert [(c.name, c.args[0]) for c in faulty.calls] == [
        ("fuse_unmount", root),
        ("remove_tree", f"{instance}/work"),
        ("remove_tree", f"{instance}/upper"),
        ("rmdir", root),
        ("rmdir", instance),
    ]


def test_generate_fails_cleanly_at_every_step(
    base_dir: str, prototype: str, daemons: Callable[[str], list[str]]
) -> None:
    rfs, faulty = probed(base_dir)
    clean_root = rfs.generate(prototype)
    calls = list(faulty.calls)
    rfs.remove(clean_root)
    for number, call in enumerate(calls, 1):
        rfs, faulty = probed(base_dir)
        faulty.fail_on = {number}
        with pytest.raises(RootFSError) as exc:
            rfs.generate(prototype)
        wanted = expected_error(call, clean_root)
        assert exc.value.error_id is wanted, f"call {number} ({call.name}): {exc.value}"
        assert exc.value.cleanup_errors == []
        assert rfs.instances() == []
        assert_base_dir_clean(base_dir)
        assert daemons(base_dir) == []
