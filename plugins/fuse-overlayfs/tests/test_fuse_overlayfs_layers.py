"""Stacks and read-only views, as root: what the backend declares
(``max_layers`` 500, ``read_only``), a stack of that many layers at
100-character paths, the exact mount plan of a stack and of a view, and the
limits it checks before making anything: one argument for every option
(MAX_ARG_STRLEN), one descriptor per layer (RLIMIT_NOFILE), no ':' in any
layer's path, and no stack where the daemon could not read
``trusted.overlay.opaque``. (The stacks' meaning, file by file, is in
rootfs-core's conformance suite and tests/integration/test_layers.py.)"""

from __future__ import annotations

import errno
import os
import resource
from collections.abc import Iterator

import pytest
from conftest import live_daemons
from rootfs_fuse_overlayfs import backend

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.testing.checks import instance_mounts, mount_options, tree_checksum
from rootfs_core.testing.conformance import MIDDLE, TOP, Layer, check_stack, make_layer
from rootfs_core.testing.faults import FaultySyscalls, probed_rootfs
from rootfs_core.testing.fixtures import assert_base_dir_clean, remove_scratch, scratch_dir

PATH_LENGTH = 100


@pytest.fixture
def holder(leak_guard: None) -> Iterator[str]:
    """A scratch directory for layers, deleted afterwards (never through a mount)."""
    path = scratch_dir("layers-")
    yield path
    remove_scratch(path)


def layers_at(holder: str, count: int, length: int = PATH_LENGTH) -> list[str]:
    """``count`` layers, bottom first, at paths of exactly ``length`` bytes;
    layer n holds ``f<n>`` and ``shared`` (content n)."""
    layers = []
    for n in range(count):
        path = os.path.join(holder, f"L{n:03d}-")
        while len(path) < length:  # in names of at most 250 bytes
            room = length - len(path)
            path += "x" * 200 + "/" if room > 250 else "x" * room
        layers.append(make_layer(path, Layer({f"f{n}": f"{n}\n".encode(), "shared": f"{n}\n".encode()})))
    return layers


def refused(rfs: RootFS, base_dir: str, *layers: str, read_only: bool = False) -> RootFSError:
    """Generate must fail, leaving no instance, mount, directory or daemon."""
    with pytest.raises(RootFSError) as failed:
        rfs.generate(*layers, read_only=read_only)
    assert failed.value.cleanup_errors == []
    assert rfs.instances() == [] and instance_mounts(base_dir) == []
    assert live_daemons(base_dir) == []
    assert_base_dir_clean(base_dir)
    return failed.value


def test_declares_stacks_of_500_layers_and_read_only_views() -> None:
    info = backend.rootfs_backend_info()
    assert (info.max_layers, info.read_only) == (500, True)


def test_a_stack_of_as_many_layers_as_it_declares(rfs: RootFS, base_dir: str, holder: str) -> None:
    """``max_layers`` layers at 100-character paths (about 50 KB of layer
    list in one argument, and as many descriptors in the daemon): every
    layer's file shows, the top's ``shared`` wins, and one more layer is
    refused before anything is made."""
    count = backend.MAX_LAYERS
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < count + backend.SPARE_DESCRIPTORS:
        pytest.skip(f"RLIMIT_NOFILE is {soft} here: {count} layers need {count + backend.SPARE_DESCRIPTORS}")
    layers = layers_at(holder, count)
    assert {len(os.fsencode(layer)) for layer in layers} == {PATH_LENGTH}
    root = rfs.generate(*layers)
    names = os.listdir(root)
    assert len(names) == count + 1
    for n in (0, 1, count // 2, count - 1):
        with open(f"{root}/f{n}", "rb") as fh:
            assert fh.read() == f"{n}\n".encode()
    with open(f"{root}/shared", "rb") as fh:
        assert fh.read() == f"{count - 1}\n".encode()
    [daemon] = live_daemons(root)
    rfs.remove(root)
    assert live_daemons(daemon) == []
    error = refused(rfs, base_dir, *layers, layers[0])
    assert error.error_id is ErrorId.ErrUnsupportedRequest
    assert "at most 500 layers, not 501" in str(error)


def test_the_plan_of_a_stack_and_of_a_view(base_dir: str, prototype: str, holder: str) -> None:
    """A stack: the layers top first in ``lowerdir``, under upper and work
    (upper marked as the instance's layer, so ``usage`` counts it). A view:
    ``lowerdir`` and ``ro``, no directory but the root, a read-only mount."""
    middle, top = make_layer(f"{holder}/middle", MIDDLE), make_layer(f"{holder}/top", TOP)
    rfs, faulty = probed_rootfs(base_dir, "fuse-overlayfs")
    root = rfs.generate(prototype, middle, top)
    instance = os.path.dirname(root)
    argv = mount_argv(faulty)
    options = argv[2].split(",")
    assert argv[0] == "fuse-overlayfs" and argv[-1] == root
    assert options[:3] == [
        f"lowerdir={top}:{middle}:{prototype}",
        f"upperdir={instance}/upper",
        f"workdir={instance}/work",
    ]
    check_stack(root, 3)
    with open(f"{root}/tmp/written", "wb") as fh:
        fh.write(b"x" * 10_000)
    assert rfs.usage(root).bytes >= 10_000
    rfs.remove(root)

    faulty.calls.clear()
    root = rfs.generate(prototype, middle, top, read_only=True)
    instance = os.path.dirname(root)
    made = [c.args[0] for c in faulty.calls if c.name == "mkdir"]
    assert made == [instance, root]
    argv = mount_argv(faulty)
    assert argv[2].split(",")[:2] == [f"lowerdir={top}:{middle}:{prototype}", "ro"]
    assert "ro" in mount_options(root)
    assert sorted(os.listdir(instance)) == ["root"]
    check_stack(root, 3)
    with pytest.raises(OSError) as failed:
        os.unlink(f"{root}/etc/hostname")
    assert failed.value.errno == errno.EROFS
    assert (rfs.usage(root).bytes, rfs.usage(root).inodes) == (0, 0)
    rfs.remove(root)
    assert_base_dir_clean(base_dir)


def mount_argv(faulty: FaultySyscalls) -> list[str]:
    """The argv of the one mount program run since ``calls`` was cleared."""
    [argv] = [c.args[0] for c in faulty.calls if c.name == "run_mount_program"]
    assert isinstance(argv, list)
    return [str(arg) for arg in argv]


def test_a_view_of_the_prototype_alone(rfs: RootFS, prototype: str) -> None:
    """fuse-overlayfs, unlike the kernel overlay, takes a single lower layer
    without an upper: a view of one layer needs no empty layer below it."""
    root = rfs.generate(prototype, read_only=True)
    assert sorted(os.listdir(root)) == sorted(os.listdir(prototype))
    assert sorted(os.listdir(os.path.dirname(root))) == ["root"]
    with pytest.raises(OSError) as failed:
        os.mkdir(f"{root}/tmp/new")
    assert failed.value.errno == errno.EROFS
    rfs.remove(root)


def test_layer_paths_too_long_for_one_argument_are_refused(rfs: RootFS, base_dir: str, holder: str) -> None:
    """Every option travels in one argument of at most MAX_ARG_STRLEN bytes
    (128 KiB): 500 layers at 300-byte paths do not fit (execve would say
    E2BIG); the backend says so before making anything."""
    layers = layers_at(holder, 500, 300)
    error = refused(rfs, base_dir, *layers)
    assert error.error_id is ErrorId.ErrUnsupportedRequest
    assert "one argument" in str(error)


@pytest.fixture
def few_descriptors() -> Iterator[int]:
    """This process's soft RLIMIT_NOFILE lowered to 256 for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        yield 256
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_more_layers_than_descriptors_are_refused(
    rfs: RootFS, base_dir: str, holder: str, few_descriptors: int
) -> None:
    """The daemon holds a descriptor per layer for its whole life and inherits
    our limit: at 1024 (a common default) it fails to start past ~1000
    layers ("Too many open files"). A stack that leaves it fewer than 64 to
    spare is refused up front; one that fits still works."""
    layers = layers_at(holder, few_descriptors - backend.SPARE_DESCRIPTORS + 1)
    error = refused(rfs, base_dir, *layers)
    assert error.error_id is ErrorId.ErrUnsupportedRequest and "ulimit -n" in str(error)
    root = rfs.generate(*layers[:-1])
    with open(f"{root}/shared", "rb") as fh:
        assert fh.read() == f"{len(layers) - 2}\n".encode()
    rfs.remove(root)


def test_a_layer_path_with_a_colon_is_refused(
    rfs: RootFS, base_dir: str, prototype: str, holder: str
) -> None:
    layer = make_layer(f"{holder}/a:b", Layer({"etc/top": b"top\n"}))
    for read_only in (False, True):
        error = refused(rfs, base_dir, prototype, layer, read_only=read_only)
        assert error.error_id is ErrorId.ErrBindMountRoot
        assert f"the layer path {layer!r} contains ':'" in str(error)


def test_reads_trusted_xattrs_as_root() -> None:
    assert backend.reads_trusted_xattrs()


def test_without_trusted_xattrs_a_stack_is_refused_and_one_layer_served(
    rfs: RootFS, base_dir: str, prototype: str, holder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the daemon cannot read ``trusted.overlay.opaque`` (without
    privilege, or in a user namespace), an opaque directory would silently
    show what lies below it: a stack is refused, a single layer is not."""
    monkeypatch.setattr(backend, "reads_trusted_xattrs", lambda: False)
    middle = make_layer(f"{holder}/middle", MIDDLE)
    before = tree_checksum(middle)
    error = refused(rfs, base_dir, prototype, middle)
    assert error.error_id is ErrorId.ErrUnsupportedRequest
    assert "trusted.overlay.opaque" in str(error)
    for read_only in (False, True):
        rfs.remove(rfs.generate(prototype, read_only=read_only))
    assert tree_checksum(middle) == before
