"""Roots over a stack of layers (``generate(prototype, *layers)``, bottom
first), as root, on every backend that stacks (overlayfs, fuse-overlayfs):
whiteouts (0/0 character devices) and opaque directories
(``trusted.overlay.opaque=y``) mean the same in each, file by file, in stacks
of 2, 3 and 200 layers at 100-character paths; writes land in the instance's
own layer and never in a layer (checksums); read-only views refuse every
write with EROFS; ``usage`` counts what was written; backends that stack one
layer (quilt) refuse a stack, or a view, cleanly; the command line; and a
real container (runc) on a 3-layer busybox stack.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from integration_support import assert_cli_error, run_cli, text

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.registry import Registry
from rootfs_core.testing.checks import instance_mounts, tree_checksum
from rootfs_core.testing.conformance import MIDDLE, TOP, Layer, check_stack, make_layer
from rootfs_core.testing.fixtures import assert_base_dir_clean
from rootfs_core.testing.neighbours import runc_container

MakePrototype = Callable[..., str]
Scratch = Callable[[str], str]
LAYERED = ("overlayfs", "fuse-overlayfs")
DEEP = 200  # layers in the deep stack
PATH_LENGTH = 100  # bytes of each of its layers' paths


@pytest.fixture(params=LAYERED)
def layered(request: pytest.FixtureRequest, base_dir: str) -> str:
    """Each backend that stacks layers, skipped (with its probe's reason)
    where it cannot work; overlayfs must work wherever these tests run."""
    name: str = request.param
    if os.geteuid() != 0:
        pytest.skip("real mounts, whiteouts and opaque directories need root")
    probe = RootFS(base_dir, backend=name).probe(name)
    if not probe.supported:
        if name == "overlayfs":
            pytest.fail(f"overlayfs must work here, but its probe says: {probe.reason}")
        pytest.skip(f"{name} is not supported here: {probe.reason}")
    return name


@pytest.fixture
def rfs(layered: str, base_dir: str) -> Iterator[RootFS]:
    """The layered backend forced on ``base_dir``; any instance a failed test
    left is removed before the base dir's own check."""
    rootfs = RootFS(base_dir, backend=layered)
    yield rootfs
    for instance in rootfs.instances():
        rootfs.remove(instance.root)


def stack(scratch: Scratch, *layers: Layer) -> list[str]:
    """``layers`` built in a fresh scratch directory, in order."""
    holder = scratch("layers-")
    return [make_layer(os.path.join(holder, f"layer{n}"), layer) for n, layer in enumerate(layers, 1)]


def checksums(paths: list[str]) -> list[str]:
    return [tree_checksum(path) for path in paths]


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def write(path: str, content: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(content)


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# ----------------------------------------------------------------- stacks of 2 and 3
@pytest.mark.parametrize("depth", [2, 3])
def test_a_stack_shows_every_layer_file_by_file(
    rfs: RootFS, make_prototype: MakePrototype, scratch: Scratch, depth: int
) -> None:
    """The tiny prototype under MIDDLE (and TOP): replaced files show the
    highest layer's content, whited-out files and directories are gone, an
    opaque directory shows only what lies at or above it, a directory made
    again above its whiteout shows nothing from below; and the record and
    ``instances()`` list the layers bottom first."""
    prototype = make_prototype()
    layers = stack(scratch, *(MIDDLE, TOP)[: depth - 1])
    root = rfs.generate(prototype, *layers)
    [instance] = rfs.instances()
    assert (instance.prototype, instance.layers, instance.read_only) == (
        prototype,
        [prototype, *layers],
        False,
    )
    check_stack(root, depth)
    rfs.remove(root)


def test_writes_land_in_the_instance_and_in_no_layer(
    rfs: RootFS, base_dir: str, make_prototype: MakePrototype, scratch: Scratch
) -> None:
    """New files, changes to a file of each layer, deletes of files from each
    layer, a name made again over a whiteout, a file written in an opaque
    directory: all visible in the root, none in any layer (checksums of every
    layer, the prototype's by ``make_prototype``), and all gone with the
    instance."""
    prototype = make_prototype()
    layers = stack(scratch, MIDDLE, TOP)
    before = checksums(layers)
    root = rfs.generate(prototype, *layers)
    write(f"{root}/etc/new", b"new\n")
    write(f"{root}/etc/hostname", b"changed top\n")  # the top's
    with open(f"{root}/etc/middle", "ab") as fh:  # the middle's
        fh.write(b"appended\n")
    write(f"{root}/home/readme", b"changed bottom\n")  # the bottom's
    os.unlink(f"{root}/etc/top")
    os.unlink(f"{root}/etc/deep/from-middle")
    os.unlink(f"{root}/etc/hostname.link")
    write(f"{root}/etc/passwd", b"back over a whiteout\n")
    write(f"{root}/etc/deep/er", b"a file where the opaque directory hides a directory\n")
    os.chmod(f"{root}/usr/bin", 0o700)
    assert read(f"{root}/etc/middle") == b"middle\nappended\n"
    assert read(f"{root}/etc/passwd") == b"back over a whiteout\n"
    assert sorted(os.listdir(f"{root}/etc")) == ["deep", "hostname", "middle", "new", "passwd"]
    assert sorted(os.listdir(f"{root}/etc/deep")) == ["er", "from-top"]
    assert stat.S_ISREG(os.lstat(f"{root}/etc/deep/er").st_mode)
    assert checksums(layers) == before, "a write reached a layer"
    upper = os.path.join(os.path.dirname(root), "upper")
    assert read(f"{upper}/etc/new") == b"new\n"  # the instance's own layer
    assert is_whiteout(os.lstat(f"{upper}/etc/top"))
    rfs.remove(root)
    assert checksums(layers) == before
    assert_base_dir_clean(base_dir)


def test_two_instances_of_one_stack_are_isolated(
    rfs: RootFS, make_prototype: MakePrototype, scratch: Scratch
) -> None:
    prototype = make_prototype()
    layers = stack(scratch, MIDDLE, TOP)
    first, second = rfs.generate(prototype, *layers), rfs.generate(prototype, *layers)
    os.unlink(f"{first}/etc/top")
    write(f"{second}/tmp/mine", b"second\n")
    assert read(f"{second}/etc/top") == b"top\n"
    assert not os.path.exists(f"{first}/tmp/mine")
    rfs.remove(first)
    check_stack(second, 3)
    rfs.remove(second)


# ----------------------------------------------------------------- 200 layers
def deep_layers(holder: str, count: int = DEEP) -> list[str]:
    """``count`` layers, bottom first, each at a path of exactly
    ``PATH_LENGTH`` bytes. Layer n holds ``layers/f<n>`` and ``shared``
    (content n); every tenth (n % 10 == 5) whites out ``layers/f<n-1>``;
    layers 0..99 each add ``gone/from-<n>``, a directory layer 100 whites
    out; every layer adds ``opq/from-<n>``, and layer 150 makes ``opq``
    opaque."""
    layers = []
    for n in range(count):
        stem = os.path.join(holder, f"L{n:03d}-")
        path = stem + "x" * (PATH_LENGTH - len(stem))
        assert len(os.fsencode(path)) == PATH_LENGTH, "the scratch directory's path is too long"
        files = {f"layers/f{n}": f"{n}\n".encode(), "shared": f"{n}\n".encode(), f"opq/from-{n}": b"opq\n"}
        whiteouts: list[str] = []
        if n < 100:
            files[f"gone/from-{n}"] = b"gone\n"
        if n == 100:
            whiteouts.append("gone")
        if n % 10 == 5:
            whiteouts.append(f"layers/f{n - 1}")
        layers.append(make_layer(path, Layer(files, whiteouts, ("opq",) if n == 150 else ())))
    return layers


def check_deep(root: str, count: int = DEEP) -> None:
    hidden = {n - 1 for n in range(count) if n % 10 == 5}
    assert sorted(os.listdir(f"{root}/layers")) == sorted(f"f{n}" for n in range(count) if n not in hidden)
    for n in range(count):
        if n not in hidden:
            assert read(f"{root}/layers/f{n}") == f"{n}\n".encode(), f"layer {n}"
    assert read(f"{root}/shared") == f"{count - 1}\n".encode()
    assert not os.path.lexists(f"{root}/gone")
    assert sorted(os.listdir(f"{root}/opq")) == sorted(f"from-{n}" for n in range(150, count))


def test_a_stack_of_200_layers_at_100_character_paths(
    rfs: RootFS, layered: str, base_dir: str, scratch: Scratch
) -> None:
    """Two hundred layers whose paths are 100 bytes each (some 20 KB of
    layer list: overlay mounts them through the new mount API, fuse-overlayfs
    takes them in one argument), every file checked; a write lands in no
    layer, and remove leaves nothing."""
    layers = deep_layers(scratch("deep-"))
    before = checksums(layers)
    root = rfs.generate(*layers)
    assert rfs.instances()[0].layers == layers
    check_deep(root)
    write(f"{root}/layers/f0", b"changed\n")
    os.unlink(f"{root}/layers/f199")
    write(f"{root}/gone", b"a file now\n")
    assert read(f"{root}/layers/f0") == b"changed\n"
    rfs.remove(root)
    assert checksums(layers) == before
    assert_base_dir_clean(base_dir)


def test_a_read_only_view_of_200_layers(rfs: RootFS, scratch: Scratch) -> None:
    layers = deep_layers(scratch("deep-"))
    root = rfs.generate(*layers, read_only=True)
    check_deep(root)
    with pytest.raises(OSError) as refused:
        write(f"{root}/layers/new", b"x")
    assert refused.value.errno == errno.EROFS
    rfs.remove(root)


# ----------------------------------------------------------------- read-only views
@pytest.mark.parametrize("depth", [1, 3])
def test_a_read_only_view_refuses_every_write_and_is_removed_like_any_root(
    rfs: RootFS, base_dir: str, make_prototype: MakePrototype, scratch: Scratch, depth: int
) -> None:
    """A view of the prototype alone, or of a 3-layer stack: create, unlink,
    chmod (and every other change) fail with EROFS, the mount is read-only in
    the mount table, it has no writable layer (usage 0), and remove leaves
    nothing."""
    prototype = make_prototype()
    layers = stack(scratch, *(MIDDLE, TOP)[: depth - 1])
    before = checksums(layers)
    root = rfs.generate(prototype, *layers, read_only=True)
    [instance] = rfs.instances()
    assert instance.read_only and instance.layers == [prototype, *layers]
    if depth == 3:
        check_stack(root, 3)
    else:
        assert read(f"{root}/etc/hostname") == b"prototype\n"
    assert os.statvfs(root).f_flag & os.ST_RDONLY, "the view's mount does not say it is read-only"
    attempts: dict[str, Callable[[], object]] = {
        "create": lambda: os.close(os.open(f"{root}/etc/created", os.O_CREAT | os.O_WRONLY, 0o644)),
        "create in tmp": lambda: os.close(os.open(f"{root}/tmp/created", os.O_CREAT | os.O_WRONLY, 0o644)),
        "unlink": lambda: os.unlink(f"{root}/home/readme"),
        "chmod": lambda: os.chmod(f"{root}/home/readme", 0o600),
        "chown": lambda: os.chown(f"{root}/home/readme", 1, 1),
        "truncate": lambda: os.truncate(f"{root}/home/readme", 0),
        "symlink": lambda: os.symlink("target", f"{root}/etc/link"),
        "mknod": lambda: os.mkfifo(f"{root}/etc/fifo"),
        "rename": lambda: os.rename(f"{root}/home/readme", f"{root}/home/renamed"),
        "setxattr": lambda: os.setxattr(f"{root}/home/readme", "user.test", b"x"),
        "utime": lambda: os.utime(f"{root}/home/readme", (0, 0)),
    }
    for what, attempt in attempts.items():
        with pytest.raises(OSError) as refused:
            attempt()
        assert refused.value.errno == errno.EROFS, f"{what}: {refused.value}"
    assert read(f"{root}/home/readme") == b"hello\n"
    rfs.remove(root)
    assert checksums(layers) == before
    assert_base_dir_clean(base_dir)


# ----------------------------------------------------------------- usage
@pytest.mark.parametrize("depth", [1, 3])
def test_a_view_has_no_writable_layer_to_count(
    rfs: RootFS, make_prototype: MakePrototype, scratch: Scratch, depth: int
) -> None:
    prototype = make_prototype()
    root = rfs.generate(prototype, *stack(scratch, *(MIDDLE, TOP)[: depth - 1]), read_only=True)
    usage = rfs.usage(root)
    rfs.remove(root)
    assert (usage.bytes, usage.inodes) == (0, 0), "a view has no writable layer, so nothing to count"


def test_usage_counts_what_was_written(rfs: RootFS, make_prototype: MakePrototype, scratch: Scratch) -> None:
    """Allocated bytes grow by at least what was written and inodes by the
    new files; a sparse file counts what it occupies, not its size."""
    prototype = make_prototype()
    root = rfs.generate(prototype, *stack(scratch, MIDDLE, TOP))
    start = rfs.usage(root)
    assert start.id == rfs.instances()[0].id
    os.mkdir(f"{root}/data")
    for n in range(10):
        write(f"{root}/data/file{n}", os.urandom(40_000))
    written = rfs.usage(root)
    assert written.bytes >= start.bytes + 400_000
    assert written.inodes >= start.inodes + 11  # the files and their directory
    with open(f"{root}/data/sparse", "wb") as fh:
        fh.write(b"x" * 8192)
        fh.truncate(1 << 30)
    sparse = rfs.usage(root)
    assert os.stat(f"{root}/data/sparse").st_size == 1 << 30
    assert sparse.bytes - written.bytes >= 8192
    assert sparse.bytes - written.bytes < 1 << 20, "a sparse file counted at its size"
    assert sparse.inodes == written.inodes + 1
    rfs.remove(root)


# ----------------------------------------------------------------- backends of one layer
def test_quilt_forced_with_two_layers_is_refused_and_leaves_nothing(
    base_dir: str, make_prototype: MakePrototype, scratch: Scratch
) -> None:
    prototype = make_prototype()
    [layer] = stack(scratch, Layer({"etc/top": b"top\n"}))
    quilt = RootFS(base_dir, backend="quilt")
    for layers, read_only in (([layer], False), ([], True)):
        with pytest.raises(RootFSError) as refused:
            quilt.generate(prototype, *layers, read_only=read_only)
        assert refused.value.error_id is ErrorId.ErrUnsupportedRequest, refused.value
        assert "quilt" in str(refused.value)
        assert quilt.instances() == [] and instance_mounts(base_dir) == []
        assert set(os.listdir(base_dir)) <= {".rootfs"}, "the refusal left something in the base dir"
    assert_base_dir_clean(base_dir)


def test_selection_passes_over_quilt_for_a_stack(
    base_dir: str, make_prototype: MakePrototype, scratch: Scratch
) -> None:
    """Without a forced backend, a one-layer request may get the quilt, a
    stack never: with the quilt as the only backend, a 2-layer request finds
    none (the error says why the quilt cannot), and leaves nothing."""
    if os.geteuid() != 0:
        pytest.skip("real mounts need root")
    prototype = make_prototype()
    [layer] = stack(scratch, Layer({"etc/top": b"top\n"}))
    discovered = Registry.discover()
    only_quilt = Registry({"quilt": (discovered.get("quilt").target, load("quilt"))}, {})
    rfs = RootFS(base_dir, registry=only_quilt)
    assert rfs.selected_backend() == "quilt"
    with pytest.raises(RootFSError) as refused:
        rfs.generate(prototype, layer)
    assert refused.value.error_id is ErrorId.ErrNoSupportedBackend
    assert "quilt: it stacks one layer, not 2" in str(refused.value)
    assert rfs.instances() == [] and instance_mounts(base_dir) == []
    everything = RootFS(base_dir)
    chosen = everything.selected_backend(layers=2)
    assert chosen != "quilt" and everything.selected_backend(layers=2, read_only=True) != "quilt"
    root = everything.generate(prototype, layer)
    assert everything.instances()[0].backend == chosen
    everything.remove(root)
    assert_base_dir_clean(base_dir)


def load(name: str) -> object:
    import importlib

    return importlib.import_module(Registry.discover().get(name).target.partition(":")[0])


# ----------------------------------------------------------------- the command line
def test_the_command_line_generates_a_stack_a_view_and_reports_usage(
    layered: str, base_dir: str, make_prototype: MakePrototype, scratch: Scratch
) -> None:
    """``rootfs generate A B C --json`` lists the layers bottom first, with
    A as the prototype; ``rootfs usage ROOT --json`` is {id, bytes, inodes};
    ``--read-only`` makes a view; ``remove`` takes both."""
    bottom = make_prototype()
    middle, top = stack(scratch, MIDDLE, TOP)
    proc = run_cli(base_dir, "--backend", layered, "generate", bottom, middle, top, "--json")
    assert proc.returncode == 0, text(proc.stderr)
    made = json.loads(proc.stdout)
    assert made["layers"] == [bottom, middle, top] and made["prototype"] == bottom
    assert made["backend"] == layered and made["read_only"] is False
    root = made["root"]
    check_stack(root, 3)
    proc = run_cli(base_dir, "usage", root, "--json")
    assert proc.returncode == 0, text(proc.stderr)
    before = json.loads(proc.stdout)
    assert set(before) == {"id", "bytes", "inodes"} and before["id"] == made["id"]
    write(f"{root}/tmp/data", b"x" * 100_000)
    proc = run_cli(base_dir, "usage", made["id"], "--json")
    after = json.loads(proc.stdout)
    assert after["bytes"] >= before["bytes"] + 100_000 and after["inodes"] >= before["inodes"] + 1
    proc = run_cli(base_dir, "usage", root)
    assert proc.returncode == 0 and f"{after['bytes']} bytes" in text(proc.stdout)

    proc = run_cli(base_dir, "--backend", layered, "generate", bottom, middle, "--read-only", "--json")
    assert proc.returncode == 0, text(proc.stderr)
    view = json.loads(proc.stdout)
    assert view["read_only"] is True and view["layers"] == [bottom, middle]
    check_stack(view["root"], 2)
    with pytest.raises(OSError) as refused:
        write(f"{view['root']}/tmp/data", b"x")
    assert refused.value.errno == errno.EROFS
    listed = {row["id"]: row for row in json.loads(run_cli(base_dir, "list", "--json").stdout)}
    assert listed[view["id"]]["layers"] == [bottom, middle] and listed[made["id"]]["layers"][-1] == top
    proc = run_cli(base_dir, "remove", root, view["root"])
    assert proc.returncode == 0, text(proc.stderr)
    assert_base_dir_clean(base_dir)


def test_the_command_line_refuses_a_stack_on_quilt(
    base_dir: str, make_prototype: MakePrototype, scratch: Scratch
) -> None:
    bottom = make_prototype()
    [top] = stack(scratch, Layer({"etc/top": b"top\n"}))
    assert_cli_error(
        run_cli(base_dir, "--backend", "quilt", "generate", bottom, top), "ErrUnsupportedRequest"
    )
    assert_cli_error(
        run_cli(base_dir, "--backend", "quilt", "generate", bottom, "--read-only"), "ErrUnsupportedRequest"
    )
    proc = run_cli(base_dir, "--backend", "quilt", "generate", bottom, top, "--json")
    assert json.loads(proc.stdout)["error"] == "ErrUnsupportedRequest"
    assert_base_dir_clean(base_dir)


# ----------------------------------------------------------------- a container
BUSYBOX_MIDDLE = Layer(
    files={
        "etc/from-middle": b"middle\n",
        "etc/motd": b"from the middle\n",
        "etc/middle-only": b"middle\n",
        "srv/data/old": b"old\n",
    },
    whiteouts=("etc/os-release",),
)
BUSYBOX_TOP = Layer(
    files={"etc/motd": b"from the top\n", "srv/data/new": b"new\n"},
    whiteouts=("etc/middle-only",),
    opaque=("srv/data",),
)


def test_runc_runs_a_container_on_a_stack_of_three_layers(
    rfs: RootFS, busybox_prototype: str, scratch: Scratch
) -> None:
    """The container sees files from each layer, not the whited-out ones of
    either layer, only the top's content of an opaque directory, and what it
    writes lands in the instance, in no layer."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed (apt-get install runc)")
    layers = stack(scratch, BUSYBOX_MIDDLE, BUSYBOX_TOP)
    before = checksums(layers)
    root = rfs.generate(busybox_prototype, *layers)
    script = (
        "cat /etc/hostname /etc/from-middle /etc/motd; ls /srv/data; "
        "for f in /etc/os-release /etc/middle-only; do test -e $f && echo $f is there; done; "
        "echo written > /written"
    )
    try:
        with runc_container(root, scratch("bundle-")) as container:
            run = subprocess.run(
                ["runc", "exec", container.name, "sh", "-c", script],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert run.returncode == 0, text(run.stderr)
            assert text(run.stdout).split("\n") == ["rootfs-sample", "middle", "from the top", "new", ""]
        wait_until_unused(root)
        assert read(f"{root}/written") == b"written\n"
    finally:
        rfs.remove(root)
    assert checksums(layers) == before


def wait_until_unused(root: str, timeout: float = 30) -> None:
    """runc's delete returns before the container's last process is reaped:
    wait until no process has anything open below ``root``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["fuser", "-sm", root], check=False).returncode != 0:
            return
        time.sleep(0.05)


# ----------------------------------------------------------------- one meaning everywhere
def test_overlay_and_fuse_overlayfs_show_the_same_stack(
    base_dir: str, make_prototype: MakePrototype, scratch: Scratch
) -> None:
    """The same 3-layer stack, through both backends: the same names, types,
    modes, sizes and contents everywhere in the root."""
    if os.geteuid() != 0 or shutil.which("fuse-overlayfs") is None:
        pytest.skip("needs root and fuse-overlayfs")
    prototype = make_prototype()
    layers = stack(scratch, MIDDLE, TOP)
    seen = []
    for name in LAYERED:
        rfs = RootFS(base_dir, backend=name)
        root = rfs.generate(prototype, *layers)
        try:
            seen.append(listing(root))
        finally:
            rfs.remove(root)
    assert seen[0] == seen[1]


def listing(root: str) -> dict[bytes, tuple[int, int, bytes]]:
    """Every path below ``root``: (type and mode, size, content or target)."""
    found = {}
    top = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                body = read(os.fsdecode(path))
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(path)
            else:
                body = b""
            size = st.st_size if not stat.S_ISDIR(st.st_mode) else 0
            found[os.path.relpath(path, top)] = (st.st_mode, size, body)
    return found


# Forms of whiteout and opacity that fuse-overlayfs reads besides the
# overlay's (its own, and the unprivileged overlay's xattr), and the kernel
# overlay (without userxattr) does not: in a layer, they are plain names and
# attributes to the kernel.
FOREIGN_FORMS = {
    "a .wh.NAME file": Layer({"etc/.wh.hostname": b""}),
    "a .wh..wh..opq file": Layer({"etc/deep/.wh..wh..opq": b"", "etc/deep/new": b"new\n"}),
    "user.overlay.opaque": Layer({"etc/deep/new": b"new\n"}),
    "user.fuseoverlayfs.opaque": Layer({"etc/deep/new": b"new\n"}),
}


@pytest.mark.xfail(
    strict=True,
    reason="fuse-overlayfs also reads its own whiteout forms (.wh.NAME, .wh..wh..opq) and the user.* "
    "opaque xattrs, which the kernel overlay shows as plain names and attributes",
)
@pytest.mark.parametrize("form", list(FOREIGN_FORMS))
def test_other_whiteout_forms_mean_the_same_in_both(
    base_dir: str, make_prototype: MakePrototype, scratch: Scratch, form: str
) -> None:
    if os.geteuid() != 0 or shutil.which("fuse-overlayfs") is None:
        pytest.skip("needs root and fuse-overlayfs")
    prototype = make_prototype()
    [layer] = stack(scratch, FOREIGN_FORMS[form])
    if form.startswith("user."):
        os.setxattr(os.path.join(layer, "etc/deep"), form, b"y")
    seen = []
    for name in LAYERED:
        rfs = RootFS(base_dir, backend=name)
        root = rfs.generate(prototype, layer)
        try:
            seen.append(listing(root))
        finally:
            rfs.remove(root)
    assert seen[0] == seen[1]
