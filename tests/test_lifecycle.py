"""generate and remove through the in-test bindtest backend, on real mounts."""

from __future__ import annotations

import errno
import json
import os

import pytest

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.testing.checks import instance_mounts, mounts_below
from rootfs_core.testing.conformance import assert_removed_for_good


def test_generate_then_remove(rfs: RootFS, prototype: str, base_dir: str) -> None:
    root = rfs.generate(prototype)
    assert root.startswith(base_dir + "/") and root.endswith("/root")
    with open(os.path.join(root, "etc/hostname")) as fh:
        assert fh.read() == "prototype\n"
    with open(os.path.join(root, "etc/hostname"), "w") as fh:  # the writable copy
        fh.write("changed\n")
    with open(os.path.join(root, "tmp/new"), "w") as fh:  # the tmpfs
        fh.write("new\n")
    with pytest.raises(OSError) as ro, open(os.path.join(root, "home/new"), "w"):
        pass
    assert ro.value.errno == errno.EROFS
    assert mounts_below(root) == [root, root + "/etc", root + "/tmp"]
    rfs.remove(root)
    assert instance_mounts(base_dir) == []
    assert not os.path.lexists(os.path.dirname(root))
    # the prototype fixture checks the prototype is bit-for-bit unchanged


def test_record_names_backend_prototype_and_steps(rfs: RootFS, prototype: str, base_dir: str) -> None:
    root = rfs.generate(prototype, tmp_size="2M")
    (instance,) = rfs.instances()
    assert instance.root == root and instance.backend == "bindtest"
    assert instance.prototype == prototype and instance.state == "ready"
    assert instance.options == {"tmp_size": "2M"}
    assert rfs.instance(instance.id) == instance == rfs.instance(root)
    with open(os.path.join(base_dir, ".rootfs/records", instance.id + ".json")) as fh:
        header, *steps = [json.loads(line) for line in fh]
    assert header["backend"] == "bindtest" and header["root"] == root
    assert [step[0] for step in steps] == ["dir", "dir", "mount", "tree", "mount", "dir", "mount"]
    assert all(step[1].startswith(os.path.dirname(root)) for step in steps)
    rfs.remove(instance.id)
    assert rfs.instances() == []


def test_context_manager_removes_on_exit(rfs: RootFS, prototype: str, base_dir: str) -> None:
    with pytest.raises(RuntimeError), rfs.generated(prototype) as root:
        assert os.path.ismount(root) or mounts_below(root)
        raise RuntimeError("the caller fails")
    assert not os.path.lexists(root)
    assert rfs.instances() == []


def test_two_instances_are_isolated(rfs: RootFS, prototype: str) -> None:
    a, b = rfs.generate(prototype), rfs.generate(prototype)
    with open(os.path.join(a, "etc/hostname"), "w") as fh:
        fh.write("a\n")
    with open(os.path.join(b, "etc/hostname")) as fh:
        assert fh.read() == "prototype\n"
    rfs.remove(a)
    rfs.remove(b)


def test_a_second_remove_is_not_found_unless_missing_ok(rfs: RootFS, prototype: str) -> None:
    root = rfs.generate(prototype)
    assert rfs.remove(root) is True
    assert_removed_for_good(rfs, root)


@pytest.mark.parametrize("bad", ["abcdefabcdef\n", "ABCDEFABCDEF", "abcdefabcdef0", "../abcdefabcdef"])
def test_only_exact_ids_are_ids(rfs: RootFS, bad: str) -> None:
    with pytest.raises(RootFSError) as info:
        rfs.remove(bad)
    assert info.value.error_id is ErrorId.ErrNotOurRoot


@pytest.mark.parametrize(
    "target", ["/", "/etc", "PROTO", "BASE", "BASE/.rootfs", "ROOT/etc", "BASE/other/root"]
)
def test_remove_refuses_foreign_paths(rfs: RootFS, prototype: str, base_dir: str, target: str) -> None:
    root = rfs.generate(prototype)
    before = sorted(mounts_below("/"))
    path = target.replace("PROTO", prototype).replace("BASE", base_dir).replace("ROOT", root)
    with pytest.raises(RootFSError) as info:
        rfs.remove(path)
    assert info.value.error_id is ErrorId.ErrNotOurRoot
    assert sorted(mounts_below("/")) == before
    assert os.path.isdir("/etc") and os.path.isfile(os.path.join(root, "etc/hostname"))
    rfs.remove(root)


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda p, b: p + "/absent", ErrorId.ErrPrototypeMissing),
        (lambda p, b: p + "/etc/hostname", ErrorId.ErrPrototypeNotDir),
        (lambda p, b: b, ErrorId.ErrPrototypeOverlapsBase),
        (lambda p, b: os.path.dirname(b), ErrorId.ErrPrototypeOverlapsBase),
        (lambda p, b: "/", ErrorId.ErrPrototypeOverlapsBase),
    ],
)
def test_bad_prototypes(rfs: RootFS, prototype: str, base_dir: str, make: object, error: ErrorId) -> None:
    with pytest.raises(RootFSError) as info:
        rfs.generate(make(prototype, base_dir))  # type: ignore[operator]
    assert info.value.error_id is error
    assert os.listdir(base_dir) == []  # a refused generate writes nothing


def test_unknown_option_is_refused(rfs: RootFS, prototype: str, base_dir: str) -> None:
    with pytest.raises(RootFSError) as info:
        rfs.generate(prototype, colour="blue")
    assert info.value.error_id is ErrorId.ErrBadOption
    assert "tmp_size" in str(info.value)


def test_remove_needs_the_backend_that_made_it(rfs: RootFS, prototype: str, base_dir: str) -> None:
    from rootfs_core.registry import Registry

    root = rfs.generate(prototype)
    without = RootFS(base_dir, registry=Registry({}, {}))
    with pytest.raises(RootFSError) as info:
        without.remove(root)
    assert info.value.error_id is ErrorId.ErrUnknownBackend
    assert "bindtest" in str(info.value)
    assert mounts_below(root)  # untouched
    rfs.remove(root)


def test_prototype_path_with_odd_characters(rfs: RootFS, prototype: str, base_dir: str) -> None:
    holder = os.path.dirname(prototype)
    odd = os.path.join(holder, "with space\nnewline-" + os.fsdecode(b"\xff"))
    os.rename(prototype, odd)
    try:
        root = rfs.generate(odd)
        assert rfs.instance(root).prototype == odd  # type: ignore[union-attr]
        with open(os.path.join(root, "etc/hostname")) as fh:
            assert fh.read() == "prototype\n"
        rfs.remove(root)
    finally:
        os.rename(odd, prototype)
