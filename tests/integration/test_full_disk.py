"""Base directories on tmpfs, and full ones: out of space during a copy or
in a writable layer, and out of inodes at every step of a generate.

Each base directory here lies on a tmpfs of its own (``small_base``), which
must be clean when it is unmounted at teardown.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import pytest
from integration_support import (
    assert_cli_error,
    assert_works,
    generate_json,
    list_json,
    require_backends,
    run_cli,
    text,
)

from rootfs_core import RootFS, RootFSError
from rootfs_core.testing.checks import instance_mounts
from rootfs_core.testing.fixtures import assert_base_dir_clean

MakePrototype = Callable[..., str]
MiB = 1 << 20


def _with_big_var(size: int) -> Callable[[str], None]:
    """A builder: ``var/big``, ``size`` bytes of data that cannot be compressed."""

    def build(path: str) -> None:
        with open(os.path.join(path, "var/big"), "wb") as fh:
            for _ in range(size // MiB):
                fh.write(os.urandom(MiB))

    return build


def _free_bytes(path: str) -> int:
    st = os.statvfs(path)
    return st.f_bfree * st.f_frsize


def test_base_dir_on_tmpfs(backend: str, prototype: str, small_base: Callable[[str], str]) -> None:
    """A base directory on tmpfs works like any other: generate, use, list,
    remove, nothing left."""
    base = small_base("size=64M")
    root = generate_json(base, backend, prototype)["root"]
    assert_works(root)
    assert [r["root"] for r in list_json(base)] == [root]
    assert run_cli(base, "remove", root).returncode == 0
    assert_base_dir_clean(base)


def test_quilt_copy_out_of_space_fails_clearly_and_rolls_back(
    make_prototype: MakePrototype, small_base: Callable[[str], str]
) -> None:
    """The quilt copies ``var`` (16 MiB) into a base directory on an 8 MiB
    tmpfs: generate fails with ``ErrOverlayDir`` saying the space ran out,
    everything is rolled back, and the space is free again."""
    prototype = make_prototype(_with_big_var(16 * MiB))
    base = small_base("size=8M")
    require_backends(base, "quilt")  # also makes the state directory before measuring
    free = _free_bytes(base)
    proc = run_cli(base, "--backend", "quilt", "generate", prototype)
    assert_cli_error(proc, "ErrOverlayDir")
    assert "No space left on device" in text(proc.stderr)
    assert "/var" in text(proc.stderr)
    assert_base_dir_clean(base)
    assert _free_bytes(base) == free


def test_overlay_upper_out_of_space_is_enospc_for_the_writer(
    make_prototype: MakePrototype, small_base: Callable[[str], str]
) -> None:
    """With the upper layer on an 8 MiB tmpfs, a 16 MiB write in the root,
    and the copy-up of a 16 MiB prototype file, fail with ENOSPC for the
    writer; the root keeps working once space is freed, remove works, and
    the space is free again."""
    prototype = make_prototype(_with_big_var(16 * MiB))
    base = small_base("size=8M")
    require_backends(base, "overlayfs")  # also makes the state directory before measuring
    free = _free_bytes(base)
    root = generate_json(base, "overlayfs", prototype)["root"]
    with pytest.raises(OSError) as write, open(os.path.join(root, "tmp/fill"), "wb") as fh:
        for _ in range(16):
            fh.write(os.urandom(MiB))
            fh.flush()
    assert write.value.errno == errno.ENOSPC
    os.unlink(os.path.join(root, "tmp/fill"))
    with pytest.raises(OSError) as copy_up, open(os.path.join(root, "var/big"), "r+b") as fh:
        fh.write(b"x")
    assert copy_up.value.errno == errno.ENOSPC
    with (
        open(os.path.join(root, "var/big"), "rb") as fh,
        open(os.path.join(prototype, "var/big"), "rb") as orig,
    ):
        assert fh.read(MiB) == orig.read(MiB)  # still the prototype's, untouched
    assert_works(root)
    assert run_cli(base, "remove", root).returncode == 0
    assert_base_dir_clean(base)
    assert _free_bytes(base) == free


def _fill_inodes(holder: str, leave: int) -> list[str]:
    """Create empty files in ``holder/fill`` until ``leave`` inodes are free."""
    fill = os.path.join(holder, "fill")
    os.makedirs(fill, exist_ok=True)
    made = []
    for n in range(os.statvfs(holder).f_ffree - leave):
        made.append(os.path.join(fill, str(n)))
        open(made[-1], "x").close()
    return made


def _unfill(made: list[str]) -> None:
    for path in made:
        os.unlink(path)


@pytest.mark.parametrize("probed", [True, False], ids=["generate", "probe-and-generate"])
def test_out_of_inodes_at_every_step_fails_clearly_and_leaves_nothing(
    backend: str, prototype: str, small_base: Callable[[str], str], probed: bool
) -> None:
    """With 1, 2, 3 ... inodes left in the base directory's filesystem, a
    generate fails at each of its steps in turn (its record, each directory,
    each copy; and, unless the backend was probed beforehand, each step of
    the probe's throw-away instance) with an error id and leaves nothing,
    until there are enough and it succeeds. (None left at all: the test
    below.)"""
    base = small_base("size=64M,nr_inodes=400")
    holder = os.path.dirname(base)
    RootFS(base)  # the state directory exists before counting
    outcomes = []
    for leave in range(1, 120):
        rfs = RootFS(base, backend=backend)
        if probed:
            rfs.selected_backend()
        made = _fill_inodes(holder, leave)
        try:
            root = rfs.generate(prototype)
        except RootFSError as exc:
            outcomes.append(exc.error_id.name)
            assert_base_dir_clean(base)
            continue
        finally:
            _unfill(made)
        rfs.remove(root)
        break
    else:
        pytest.fail(f"generate never succeeded: {outcomes}")
    print(f"{backend}: failed {len(outcomes)} times before succeeding: {outcomes}")
    assert len(outcomes) >= 3
    if probed:
        assert "ErrBackendUnsupported" not in outcomes
    assert_base_dir_clean(base)


def test_no_inode_left_for_the_marker_fails_clearly(
    backend: str, prototype: str, small_base: Callable[[str], str]
) -> None:
    """Not a single inode left: ``rootfs generate`` exits 1 with an error
    id, no traceback, and leaves nothing."""
    base = small_base("size=64M,nr_inodes=400")
    run_cli(base, "list")
    made = _fill_inodes(os.path.dirname(base), 0)
    try:
        proc = run_cli(base, "--backend", backend, "generate", prototype)
    finally:
        _unfill(made)
    assert_base_dir_clean(base)
    assert instance_mounts(base) == []
    assert_cli_error(proc)
