"""The behaviour every backend must have, as test classes to inherit.

Adopting it in a backend's own tests takes three lines::

    from rootfs_core.testing.conformance import BackendConformance

    class TestConformance(BackendConformance):
        backend = "mybackend"

and, for the same checks against simulated mounts (so the lifecycle and every
rollback are proven even where the kernel lacks the filesystem)::

    class TestConformanceFaked(BackendConformance):
        backend = "mybackend"
        real_mounts = False

Capability flags (class attributes):

- ``real_mounts``: mount for real (default). False: mounts go through
  ``FakeMounts`` and the backend's support is assumed, since a probe cannot
  succeed against simulated mounts; the checks that read files through the
  root are skipped, every lifecycle and fault-injection check still runs.
- ``writable``: directories of the root that must be writable (default
  ``etc`` and ``tmp``, which every in-tree backend makes writable).
- ``options``: options passed to every generate of a writable root (a
  read-only view is generated without them: options such as ``size`` shape
  a writable layer, which a view has none of).
- ``band``: the priority band the backend belongs to (one of
  ``rootfs_core.hookspecs``' ``BAND_*``), which its priority must lie in;
  unset, that check skips (the registry itself only refuses priorities
  outside 1..399, which the bands cover whole).

The layered cases (a stack with whiteouts and an opaque directory, a
read-only view, a failure at every step of a layered generate) run when the
backend's ``BackendInfo`` declares ``max_layers`` of 2 or more (and
``read_only`` for the view); every backend is checked to refuse, before
anything is made, a request beyond what it declares. Layers are built with
``make_layer``, in the overlay format (as root: a whiteout is a device node).

The commit cases prove ``RootFS.commit`` finds what was written in a root of
this backend (from its journal: see ``rootfs_core.commit``) and leaves it as
a layer that shows the same tree again: a file written, a prototype file
deleted and a directory replaced in ``etc`` (so ``etc`` must be among
``writable``), committed into the layer store, looked at through
``generate(prototype, layer)``, then removed. They need real mounts and
root (skipped otherwise: commit reads and unmounts the real root, and a
layer's whiteouts are device nodes). The second generate needs a layered
backend: the backend itself if it declares ``max_layers`` of 2 or more,
else the installed layered backend of highest priority whose probe
succeeds here (overlayfs, say); with none, the round trip skips saying so.
A read-only view (where the backend declares them) is refused with
``ErrUnsupportedRequest``, untouched.

With ``real_mounts`` and a probe that says "not supported", the tests skip
with the probe's reason: a skip, never a pass. The fixtures ``base_dir`` and
``prototype`` (from ``rootfs_core.testing.fixtures``) fail any test that
leaves a mount, a directory or a record, or changes the prototype.

``python -m rootfs_core.testing NAME`` runs both classes against an installed
backend without writing any code.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import shutil
import stat
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar

import pytest

from rootfs_core import basedir, hookspecs
from rootfs_core.commit import private_xattrs
from rootfs_core.core import RootFS
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.hookspecs import Probe
from rootfs_core.registry import Registry
from rootfs_core.syscalls import LinuxSyscalls, Syscalls
from rootfs_core.testing.checks import instance_mounts, mount_points, mounts_below, tree_checksum
from rootfs_core.testing.faults import Call, FakeMounts, FaultySyscalls
from rootfs_core.testing.prototypes import ODD_NAME

BANDS = (
    hookspecs.BAND_KERNEL_UNION,
    hookspecs.BAND_OTHER_UNION,
    hookspecs.BAND_COPY,
    hookspecs.BAND_LAST_RESORT,
)
OPAQUE_XATTR = "trusted.overlay.opaque"


@dataclasses.dataclass(frozen=True)
class Layer:
    """What ``make_layer`` puts in a layer: ``files`` (relative path to
    content; parent directories are made), ``whiteouts`` (names that hide
    what lies below: 0/0 character devices) and ``opaque`` directories
    (``trusted.overlay.opaque=y``: nothing below shows through)."""

    files: Mapping[str, bytes] = dataclasses.field(default_factory=dict)
    whiteouts: Sequence[str] = ()
    opaque: Sequence[str] = ()


def make_layer(path: str, layer: Layer) -> str:
    """Build ``layer`` at ``path`` (created) in the overlay format; as root
    only (a whiteout is a device node, the opaque mark a ``trusted.*``
    attribute). Returns ``path``."""
    os.makedirs(path, exist_ok=True)
    for relative in layer.opaque:
        os.makedirs(os.path.join(path, relative), exist_ok=True)
        os.setxattr(os.path.join(path, relative), OPAQUE_XATTR, b"y")
    for relative, content in layer.files.items():
        os.makedirs(os.path.dirname(os.path.join(path, relative)), exist_ok=True)
        with open(os.path.join(path, relative), "wb") as fh:
            fh.write(content)
    for relative in layer.whiteouts:
        os.makedirs(os.path.dirname(os.path.join(path, relative)), exist_ok=True)
        os.mknod(os.path.join(path, relative), stat.S_IFCHR, os.makedev(0, 0))
    return path


# Two layers over ``make_tiny_prototype``, bottom first. The middle one
# replaces a file, deletes a file and a whole directory, and makes a
# directory opaque; the top one deletes a file of the middle and of the
# bottom, and re-creates the directory the middle deleted.
MIDDLE = Layer(
    files={
        "etc/hostname": b"middle\n",
        "etc/middle": b"middle\n",
        "etc/deep/from-middle": b"middle\n",
        "home/only-middle": b"middle\n",
    },
    whiteouts=("etc/passwd", "var"),
    opaque=("etc/deep",),
)
TOP = Layer(
    files={
        "etc/hostname": b"top\n",
        "etc/top": b"top\n",
        "etc/deep/from-top": b"top\n",
        "var/fresh": b"fresh\n",
    },
    whiteouts=("home/only-middle", "usr/bin/tool"),
)


def check_stack(root: str, depth: int) -> None:
    """``root`` shows ``make_tiny_prototype`` under ``MIDDLE`` (``depth``
    2) or under ``MIDDLE`` and ``TOP`` (``depth`` 3), file by file."""

    def read(relative: str) -> bytes:
        with open(os.path.join(root, relative), "rb") as fh:
            return fh.read()

    def names(relative: str) -> list[str]:
        return sorted(os.listdir(os.path.join(root, relative)))

    assert read("etc/hostname.link") == b"prototype\n"  # the bottom shows through
    assert read("home/readme") == b"hello\n"
    assert os.readlink(os.path.join(root, "bin")) == "usr/bin"
    assert read("etc/middle") == b"middle\n"
    assert not os.path.lexists(os.path.join(root, "etc/passwd"))  # a whiteout in the middle
    if depth == 2:
        assert read("etc/hostname") == b"middle\n"
        assert names("etc") == ["deep", "hostname", "hostname.link", "middle"]
        assert names("etc/deep") == ["from-middle"]  # opaque: the bottom's er is hidden
        assert not os.path.lexists(os.path.join(root, "var"))  # a directory deleted whole
        assert read("home/only-middle") == b"middle\n"
        assert names("usr/bin") == ["tool"]
    else:
        assert read("etc/hostname") == b"top\n"
        assert read("etc/top") == b"top\n"
        assert names("etc") == ["deep", "hostname", "hostname.link", "middle", "top"]
        assert names("etc/deep") == ["from-middle", "from-top"]
        assert names("var") == ["fresh"]  # re-created above its whiteout: nothing from below
        assert not os.path.lexists(os.path.join(root, "home/only-middle"))
        assert names("usr/bin") == []
    for relative in ("etc", "etc/deep", "home", "usr/bin"):
        for name in names(relative):
            st = os.lstat(os.path.join(root, relative, name))
            assert not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0), f"a whiteout shows: {relative}/{name}"


# What the commit cases write in a root, all in ``etc`` (a quilt's writable
# directories are whole: only changes inside one of them are committed).
COMMIT_NEW = ("etc/committed", b"written before the commit\n")
COMMIT_DELETED = "etc/passwd"
COMMIT_REPLACED = "etc/deep"  # holds er/file in the prototype
COMMIT_FRESH = ("fresh", b"only this, after the rm -r\n")


def change_for_commit(root: str) -> None:
    """Write a file, delete a prototype file, replace a directory (``rm -r``
    then ``mkdir`` with new content) in ``root``."""
    relative, content = COMMIT_NEW
    with open(os.path.join(root, relative), "wb") as fh:
        fh.write(content)
    os.unlink(os.path.join(root, COMMIT_DELETED))
    shutil.rmtree(os.path.join(root, COMMIT_REPLACED))
    os.mkdir(os.path.join(root, COMMIT_REPLACED), 0o755)
    name, fresh = COMMIT_FRESH
    with open(os.path.join(root, COMMIT_REPLACED, name), "wb") as fh:
        fh.write(fresh)


def tree_view(root: str) -> dict[bytes, tuple[object, ...]]:
    """What ``root`` shows, by relative path: the type, and the content's
    bytes (a file), the target (a symlink) or the device number (a device).
    Modes, owners and times are left out: the round trip compares names and
    contents."""
    found: dict[bytes, tuple[object, ...]] = {}
    top = os.fsencode(root)
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            kind = stat.S_IFMT(st.st_mode)
            item: tuple[object, ...] = (kind,)
            if stat.S_ISREG(st.st_mode):
                with open(full, "rb") as fh:
                    item = (kind, fh.read())
            elif stat.S_ISLNK(st.st_mode):
                item = (kind, os.readlink(full))
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                item = (kind, st.st_rdev)
            found[os.path.relpath(full, top)] = item
    return found


def _tree_difference(before: dict[bytes, tuple[object, ...]], after: dict[bytes, tuple[object, ...]]) -> str:
    missing = sorted(set(before) - set(after))
    extra = sorted(set(after) - set(before))
    differ = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    if not (missing or extra or differ):
        return ""
    return f"missing {missing[:5]}, extra {extra[:5]}, differing {differ[:5]}"


def mounts_of(rfs: RootFS) -> list[str]:
    """The mounts of ``rfs``'s instances: real ones below its base directory
    and, with ``FakeMounts``, the simulated ones."""
    syscalls = rfs.syscalls.inner if isinstance(rfs.syscalls, FaultySyscalls) else rfs.syscalls
    simulated = list(syscalls.mounted) if isinstance(syscalls, FakeMounts) else []
    return simulated + instance_mounts(rfs.base_dir)


def assert_removed_for_good(rfs: RootFS, root: str) -> None:
    """After ``rfs.remove(root)``: no record, no mount and no directory of
    the instance is left, and a second remove, by path or by id, touches
    nothing. It raises ``ErrNoSuchRoot`` naming what it was given (a script
    with a stale path learns of it), or, with ``missing_ok``, returns True
    (False would say data is kept for a copy elsewhere: there is none)."""
    instance_id = os.path.basename(os.path.dirname(root))
    assert rfs.instances() == [], "a record was left"
    assert mounts_of(rfs) == [], "a mount was left"
    assert sorted(os.listdir(rfs.base_dir)) == [".rootfs"], "a directory of the instance was left"
    before = (mount_points(), mounts_of(rfs), tree_checksum(rfs.base_dir))
    for again in (root, instance_id):
        with pytest.raises(RootFSError) as info:
            rfs.remove(again)
        assert info.value.error_id is ErrorId.ErrNoSuchRoot, info.value
        assert again in str(info.value), info.value
        assert rfs.remove(again, missing_ok=True) is True
    after = (mount_points(), mounts_of(rfs), tree_checksum(rfs.base_dir))
    assert after == before, "a remove of a root that is gone changed the mounts or the base directory"


class BackendConformance:
    """Inherit, set ``backend``; see the module's docstring."""

    backend: ClassVar[str]
    real_mounts: ClassVar[bool] = True
    writable: ClassVar[tuple[str, ...]] = ("etc", "tmp")
    options: ClassVar[dict[str, str]] = {}
    band: ClassVar[range | None] = None

    # ---------------------------------------------------------- factories
    def make_syscalls(self) -> Syscalls:
        """Fresh syscalls for one RootFS: override to wrap or replace them."""
        return LinuxSyscalls() if self.real_mounts else FakeMounts()

    def make_rootfs(self, base_dir: str, syscalls: Syscalls) -> RootFS:
        """The RootFS under test, with the backend probed (or, with simulated
        mounts, assumed supported); skips if the backend is unsupported."""
        rfs = RootFS(base_dir, backend=self.backend, syscalls=syscalls)
        if not self.real_mounts:
            # The one place the suite reaches inside RootFS: a probe cannot
            # succeed against FakeMounts, so its verdict is given.
            rfs._prober.give(self.backend, Probe.ok())
        probe = rfs.probe(self.backend)
        if not probe.supported:
            pytest.skip(f"{self.backend} is not supported here: {probe.reason}")
        return rfs

    @pytest.fixture
    def rfs(self, base_dir: str) -> RootFS:
        return self.make_rootfs(base_dir, self.make_syscalls())

    def _need_real_mounts(self) -> None:
        if not self.real_mounts:
            pytest.skip("reads files through the root: needs real mounts")

    def _info(self) -> hookspecs.BackendInfo:
        info = Registry.discover().get(self.backend).info
        assert info is not None
        return info

    def _need_layers(self, *, read_only: bool = False, whiteouts: bool = True) -> int:
        """How many layers the stack cases use (3, or 2 if that is all the
        backend declares); skips where it declares no stacks (or no views)."""
        info = self._info()
        if info.max_layers < 2:
            pytest.skip(f"{self.backend} declares max_layers={info.max_layers}: no stacks")
        if read_only and not info.read_only:
            pytest.skip(f"{self.backend} declares no read-only views")
        if whiteouts and os.geteuid() != 0:
            pytest.skip("overlay-format whiteouts and opaque directories are made as root")
        return min(3, info.max_layers)

    @pytest.fixture
    def layer_dir(self) -> Iterator[str]:
        """An empty directory to build layers in, deleted afterwards (never
        through a mount)."""
        # Imported here: the fixtures module asks pytest to rewrite this one's
        # asserts, which it can only do if it is loaded first.
        from rootfs_core.testing.fixtures import remove_scratch, scratch_dir

        holder = scratch_dir("layers-")
        yield holder
        assert mounts_below(holder) == [], f"mounts left below {holder}"
        remove_scratch(holder)

    # ---------------------------------------------------------- describing itself
    def test_describes_itself(self) -> None:
        info = self._info()
        assert info.summary.strip(), f"{self.backend} has an empty summary"
        unknown = set(self.options) - set(info.options)
        assert not unknown, (
            f"the suite's options {sorted(unknown)} are not among those {self.backend} declares"
        )

    def test_priority_is_in_the_band_it_claims(self) -> None:
        """The registry refuses a priority outside 1..399, which the bands
        cover whole: only the band the backend claims says whether its
        priority places it where it belongs in the selection order."""
        if self.band is None:
            pytest.skip(
                f"set band to the hookspecs.BAND_* {self.backend} belongs to (the runner's --band), "
                "to check its priority"
            )
        assert self.band in BANDS, f"{self.band} is none of the bands of rootfs_core.hookspecs"
        priority = self._info().priority
        band = f"{self.band.start}..{self.band.stop - 1}"
        assert priority in self.band, f"{self.backend}'s priority {priority} is outside its band {band}"

    def test_probe_explains_itself(self, base_dir: str, prototype: str) -> None:
        """A verdict, leaving nothing behind; when it is "unsupported", a
        reason, which a generate forced onto the backend reports (as
        ``ErrBackendUnsupported``) before making anything."""
        rfs = RootFS(base_dir, backend=self.backend)
        probe = rfs.probe(self.backend)
        assert type(probe.supported) is bool, f"supported is not a bool: {probe!r}"
        assert rfs.instances() == [] and instance_mounts(base_dir) == [], "the probe left its instance"
        assert sorted(os.listdir(base_dir)) == [".rootfs"], "the probe left a directory"
        if probe.supported:
            return
        assert isinstance(probe.reason, str) and probe.reason.strip(), (
            f"unsupported, with no reason: {probe!r}"
        )
        with pytest.raises(RootFSError) as refused:
            rfs.generate(prototype, **self.options)
        assert refused.value.error_id is ErrorId.ErrBackendUnsupported, refused.value
        assert probe.reason in str(refused.value), refused.value
        assert rfs.instances() == [] and sorted(os.listdir(base_dir)) == [".rootfs"]

    # ---------------------------------------------------------- the root
    def test_root_shows_the_prototype(self, rfs: RootFS, prototype: str) -> None:
        self._need_real_mounts()
        root = rfs.generate(prototype, **self.options)
        try:
            with open(os.path.join(root, "etc/hostname")) as fh:
                assert fh.read() == "prototype\n"
            assert os.readlink(os.path.join(root, "bin")) == "usr/bin"
            with open(os.path.join(os.fsencode(root), b"home", ODD_NAME), "rb") as fh:
                assert fh.read() == b"odd\n"
            with open(os.path.join(root, "etc/hostname.link")) as fh:
                assert fh.read() == "prototype\n"
        finally:
            rfs.remove(root)

    def test_writes_deletes_and_renames_stay_out_of_the_prototype(self, rfs: RootFS, prototype: str) -> None:
        self._need_real_mounts()
        root = rfs.generate(prototype, **self.options)
        try:
            for directory in self.writable:
                with open(os.path.join(root, directory, "new-file"), "w") as fh:
                    fh.write(directory)
            with open(os.path.join(root, "etc/hostname"), "w") as fh:
                fh.write("changed\n")
            os.unlink(os.path.join(root, "etc/passwd"))
            os.rename(os.path.join(root, "etc/hostname.link"), os.path.join(root, "etc/renamed"))
            shutil.move(os.path.join(root, "etc/deep"), os.path.join(root, "etc/deeper"))  # copes with EXDEV
            with open(os.path.join(root, "etc/hostname")) as fh:
                assert fh.read() == "changed\n"
            assert not os.path.exists(os.path.join(root, "etc/passwd"))
            assert os.path.isfile(os.path.join(root, "etc/deeper/er/file"))
            assert not os.path.exists(os.path.join(root, "etc/deep"))
            for directory in self.writable:
                assert not os.path.exists(os.path.join(prototype, directory, "new-file"))
        finally:
            rfs.remove(root)
        # the prototype fixture proves the prototype unchanged, bit for bit

    def test_two_instances_are_isolated(self, rfs: RootFS, prototype: str) -> None:
        self._need_real_mounts()
        first = rfs.generate(prototype, **self.options)
        second = rfs.generate(prototype, **self.options)
        try:
            assert first != second
            with open(os.path.join(first, "tmp/mine"), "w") as fh:
                fh.write("first\n")
            assert not os.path.exists(os.path.join(second, "tmp/mine"))
        finally:
            rfs.remove(first)
            rfs.remove(second)

    # ---------------------------------------------------------- layers
    def test_what_it_cannot_serve_is_refused_before_anything_is_made(
        self, base_dir: str, prototype: str
    ) -> None:
        """More layers than ``max_layers``, or a read-only view it does not
        declare: ``ErrUnsupportedRequest``, and no record, directory or mount.
        The refusal comes before the probe: it runs where the backend does not."""
        rfs = RootFS(base_dir, backend=self.backend, syscalls=self.make_syscalls())
        info = self._info()
        requests: list[tuple[int, bool]] = [(info.max_layers + 1, False)] if info.max_layers < 10_000 else []
        if not info.read_only:
            requests.append((1, True))
        if not requests:
            pytest.skip(f"{self.backend} serves every request this suite can make")
        for count, read_only in requests:
            with pytest.raises(RootFSError) as failed:
                rfs.generate(*[prototype] * count, read_only=read_only)
            assert failed.value.error_id is ErrorId.ErrUnsupportedRequest, failed.value
            assert rfs.instances() == [] and mounts_of(rfs) == []
            assert set(os.listdir(rfs.base_dir)) <= {".rootfs"}

    def test_a_stack_shows_each_layer_and_hides_what_whiteouts_and_opaque_dirs_hide(
        self, rfs: RootFS, prototype: str, layer_dir: str
    ) -> None:
        """``make_tiny_prototype`` under ``MIDDLE`` and ``TOP`` (see
        ``check_stack``); what is written in the root lands in none of the
        layers, and a remove leaves nothing."""
        self._need_real_mounts()
        depth = self._need_layers()
        layers = [make_layer(os.path.join(layer_dir, "middle"), MIDDLE)]
        if depth == 3:
            layers.append(make_layer(os.path.join(layer_dir, "top"), TOP))
        before = [tree_checksum(layer) for layer in layers]
        root = rfs.generate(prototype, *layers, **self.options)
        try:
            [instance] = rfs.instances()
            assert instance.layers == [prototype, *layers] and instance.prototype == prototype
            check_stack(root, depth)
            with open(os.path.join(root, "etc/hostname"), "wb") as fh:
                fh.write(b"written\n")
            with open(os.path.join(root, "etc/deep/new"), "wb") as fh:
                fh.write(b"new\n")
            os.unlink(os.path.join(root, "etc/middle"))
            os.mkdir(os.path.join(root, "etc/passwd"))  # where a whiteout was
            assert sorted(os.listdir(os.path.join(root, "etc/deep")))[-1] == "new"
            assert not os.path.lexists(os.path.join(root, "etc/middle"))
        finally:
            rfs.remove(root)
        assert [tree_checksum(layer) for layer in layers] == before, "a layer was modified"
        # the prototype fixture proves the bottom layer unchanged

    def test_a_read_only_view_refuses_every_write(self, rfs: RootFS, prototype: str, layer_dir: str) -> None:
        """A view of the stack (or of the prototype alone, without root):
        reads work, every kind of write fails with EROFS, remove as usual."""
        self._need_real_mounts()
        info = self._info()
        if not info.read_only:
            pytest.skip(f"{self.backend} declares no read-only views")
        stacked = info.max_layers >= 2 and os.geteuid() == 0
        layers = [make_layer(os.path.join(layer_dir, "middle"), MIDDLE)] if stacked else []
        before = [tree_checksum(layer) for layer in layers]
        root = rfs.generate(prototype, *layers, read_only=True)
        try:
            [instance] = rfs.instances()
            assert instance.read_only and instance.layers == [prototype, *layers]
            if stacked:
                check_stack(root, 2)
            else:
                with open(os.path.join(root, "etc/hostname"), "rb") as fh:
                    assert fh.read() == b"prototype\n"

            def at(relative: str) -> str:
                return os.path.join(root, relative)

            writes: dict[str, Callable[[], object]] = {
                "create": lambda: os.close(os.open(at("tmp/new"), os.O_CREAT | os.O_WRONLY)),
                "open for writing": lambda: os.close(os.open(at("etc/hostname"), os.O_WRONLY)),
                "unlink": lambda: os.unlink(at("etc/hostname")),
                "chmod": lambda: os.chmod(at("etc/hostname"), 0o600),
                "mkdir": lambda: os.mkdir(at("etc/new")),
                "rename": lambda: os.rename(at("home/readme"), at("home/moved")),
                "rmdir": lambda: os.rmdir(at("usr/lib")),
            }
            for what, write in writes.items():
                with pytest.raises(OSError) as refused:
                    write()
                assert refused.value.errno == errno.EROFS, f"{what}: {refused.value}"
        finally:
            rfs.remove(root)
        assert rfs.instances() == [] and mounts_of(rfs) == []
        assert [tree_checksum(layer) for layer in layers] == before, "a layer was modified"

    def test_a_failure_at_any_step_of_a_layered_generate_leaves_nothing(
        self, base_dir: str, prototype: str, layer_dir: str
    ) -> None:
        depth = self._need_layers(whiteouts=False)
        layers = [prototype]
        for n in range(1, depth):
            layers.append(os.path.join(layer_dir, f"layer{n}"))
            os.makedirs(os.path.join(layers[-1], "etc"))
            with open(os.path.join(layers[-1], "etc", f"layer{n}"), "wb") as fh:
                fh.write(b"layer\n")
        rfs, faulty = self._counted(base_dir)
        root = rfs.generate(*layers, **self.options)
        steps = len(faulty.calls)
        rfs.remove(root)
        for step in range(1, steps + 1):
            rfs, faulty = self._counted(base_dir)
            faulty.fail_on = {step}
            with pytest.raises(RootFSError) as info:
                rfs.generate(*layers, **self.options)
            assert info.value.cleanup_errors == [], f"step {step}: rollback failed: {info.value}"
            assert rfs.instances() == [], f"step {step}: a record was left"
            assert mounts_of(rfs) == [], f"step {step}: a mount was left"
            assert sorted(os.listdir(base_dir)) == [".rootfs"], f"step {step}: a directory was left"

    # ---------------------------------------------------------- commit
    def _need_commit(self) -> None:
        if not self.real_mounts:
            pytest.skip("commit reads and unmounts the real root: needs real mounts")
        if os.geteuid() != 0:
            pytest.skip("a committed layer's whiteouts are device nodes: made as root")
        if "etc" not in self.writable:
            pytest.skip("the commit cases change etc, which this backend does not declare writable")

    def _viewer(self, rfs: RootFS) -> RootFS:
        """Where ``generate(prototype, layer)`` is made: this backend if it
        stacks, else the installed layered backend of highest priority that
        works here; skips if there is none."""
        info = self._info()
        if info.max_layers >= 2:
            return rfs
        tried = []
        for candidate in Registry.discover().by_priority():
            if candidate.name == self.backend or candidate.info is None or candidate.info.max_layers < 2:
                continue
            viewer = RootFS(rfs.base_dir, backend=candidate.name)
            probe = viewer.probe(candidate.name)
            if probe.supported:
                return viewer
            tried.append(f"{candidate.name}: {probe.reason}")
        pytest.skip(
            f"{self.backend} declares max_layers={info.max_layers}, and the round trip's second generate "
            "(prototype and the committed layer) needs a layered backend: none is installed and supported "
            f"here{' (' + '; '.join(tried) + ')' if tried else ''}"
        )

    def test_commit_round_trips_through_the_layer_store(self, rfs: RootFS, prototype: str) -> None:
        """generate -> write a file, delete a prototype file, replace a
        directory -> commit (into the store) -> ``generate(prototype,
        layer)`` shows the same names and contents: the deleted file absent,
        only the new content in the replaced directory. The layer holds no
        private overlay state; remove and ``remove_layer`` leave nothing."""
        self._need_commit()
        viewer = self._viewer(rfs)
        root = rfs.generate(prototype, **self.options)
        try:
            change_for_commit(root)
            before = tree_view(root)
            try:
                result = rfs.commit(root)
            except RootFSError as exc:
                if exc.error_id is ErrorId.ErrUnsupportedRequest and "filesystem of its own" in exc.message:
                    # An upper on a tmpfs of the instance (overlayfs size=): refused
                    # with nothing touched, which is all that is promised for it.
                    assert [i.state for i in rfs.instances()] == ["ready"]
                    assert rfs.syscalls.is_mountpoint(root)
                    pytest.skip(f"commit refuses this root, untouched: {exc}")
                if exc.error_id is ErrorId.ErrUnsupportedRequest:
                    pytest.fail(
                        f"commit refused a writable root ({exc}); where it found nothing writable in the "
                        "journal: make the upper or the writable copies with ctx.scratch_dir(..., "
                        "layer=True) (ctx.copy_dir does) before mounting over them in the root (see "
                        "docs/writing-a-backend.md)"
                    )
                raise
            assert result.id is not None and os.path.isdir(result.layer), result
            assert rfs.instances() == [] and mounts_of(rfs) == [], "commit left the instance"
            assert sorted(os.listdir(rfs.base_dir)) == [".rootfs"]
            assert private_xattrs(result.layer) == [], "the layer holds private state of a mount"
            [stored] = rfs.layers()
            assert (stored.id, stored.path, stored.instances) == (result.id, result.layer, [])

            options = self.options if viewer is rfs else {}
            second = viewer.generate(prototype, result.id, **options)
            [instance] = viewer.instances()
            assert instance.layers == [prototype, result.layer]
            after = tree_view(second)
            assert after == before, f"the layer shows another tree: {_tree_difference(before, after)}"
            relative, content = COMMIT_NEW
            with open(os.path.join(second, relative), "rb") as fh:
                assert fh.read() == content
            assert not os.path.lexists(os.path.join(second, COMMIT_DELETED))
            name, fresh = COMMIT_FRESH
            assert os.listdir(os.path.join(second, COMMIT_REPLACED)) == [name]
            with open(os.path.join(second, COMMIT_REPLACED, name), "rb") as fh:
                assert fh.read() == fresh
            assert [layer.instances for layer in rfs.layers()] == [[instance.id]]
            viewer.remove(second)
            rfs.remove_layer(result.id)
            assert rfs.layers() == [] and rfs.instances() == [] and mounts_of(rfs) == []
        finally:
            for left in rfs.instances():  # whatever a failure left, before the base dir's own check
                rfs.remove(left.root)
            for layer in rfs.layers():
                rfs.remove_layer(layer.id)

    def test_a_read_only_view_has_nothing_to_commit(self, rfs: RootFS, prototype: str) -> None:
        """``ErrUnsupportedRequest`` before anything is touched: the view
        stays ready, no layer is made."""
        if not self._info().read_only:
            pytest.skip(f"{self.backend} declares no read-only views")
        view = rfs.generate(prototype, read_only=True)
        try:
            with pytest.raises(RootFSError) as refused:
                rfs.commit(view)
            assert refused.value.error_id is ErrorId.ErrUnsupportedRequest, refused.value
            assert [(i.root, i.state) for i in rfs.instances()] == [(view, "ready")]
            assert rfs.layers() == []
        finally:
            rfs.remove(view)

    # ---------------------------------------------------------- removal
    def test_remove_leaves_nothing_and_a_second_is_not_found(self, rfs: RootFS, prototype: str) -> None:
        """A second remove of the same root says ``ErrNoSuchRoot`` (a script
        with a stale path learns of it) unless ``missing_ok``."""
        root = rfs.generate(prototype, **self.options)
        assert rfs.syscalls.is_mountpoint(root)
        assert [(i.root, i.state) for i in rfs.instances()] == [(root, "ready")]
        assert rfs.remove(root) is True
        self.assert_nothing_else_left(root)
        assert_removed_for_good(rfs, root)

    def test_a_busy_root_is_refused_untouched_then_removed(self, rfs: RootFS, prototype: str) -> None:
        """A process in the root: remove fails with ``ErrRootBusy`` before
        touching anything (the root stays ready and whole), then works."""
        self._need_real_mounts()
        root = rfs.generate(prototype, **self.options)
        before = mounts_of(rfs)
        holder = subprocess.Popen(["sleep", "60"], cwd=root)
        try:
            with pytest.raises(RootFSError) as info:
                rfs.remove(root)
            assert info.value.error_id is ErrorId.ErrRootBusy
            assert mounts_of(rfs) == before
            assert [(i.root, i.state) for i in rfs.instances()] == [(root, "ready")]
            with open(os.path.join(root, "etc/hostname")) as fh:
                assert fh.read() == "prototype\n"
        finally:
            holder.kill()
            holder.wait()
        rfs.remove(root)
        assert mounts_of(rfs) == []

    def test_refuses_to_remove_what_it_did_not_make(self, rfs: RootFS, prototype: str) -> None:
        with pytest.raises(RootFSError) as info:
            rfs.remove(prototype)
        assert info.value.error_id is ErrorId.ErrNotOurRoot
        assert os.path.isfile(os.path.join(prototype, "etc/hostname"))

    # ---------------------------------------------------------- faults
    def _counted(self, base_dir: str) -> tuple[RootFS, FaultySyscalls]:
        faulty = FaultySyscalls(self.make_syscalls())
        rfs = self.make_rootfs(base_dir, faulty)
        # The base directory's one-time set-up (``rootfs_core.basedir``) is
        # not generate's: done here, so every run counts the same calls.
        basedir.make_private(rfs.base_dir, faulty.inner)
        faulty.calls.clear()  # count from here: the probe's calls are not generate's
        return rfs, faulty

    def test_a_failure_at_any_step_of_generate_leaves_nothing(self, base_dir: str, prototype: str) -> None:
        rfs, faulty = self._counted(base_dir)
        root = rfs.generate(prototype, **self.options)
        steps = len(faulty.calls)
        rfs.remove(root)
        assert steps >= 4, "generate made fewer calls than the instance directories alone need"
        for step in range(1, steps + 1):
            rfs, faulty = self._counted(base_dir)
            faulty.fail_on = {step}
            with pytest.raises(RootFSError) as info:
                rfs.generate(prototype, **self.options)
            assert info.value.cleanup_errors == [], f"step {step}: rollback failed: {info.value}"
            assert rfs.instances() == [], f"step {step}: a record was left"
            assert mounts_of(rfs) == [], f"step {step}: a mount was left"
            assert sorted(os.listdir(base_dir)) == [".rootfs"], f"step {step}: a directory was left"

    def test_a_failure_at_any_step_of_remove_can_be_retried(self, base_dir: str, prototype: str) -> None:
        """Each call of remove fails once in turn (with data written in the
        root): the error names the step, the record is kept, nothing of the
        prototype is touched, and a second remove finishes the job."""
        rfs, faulty = self._counted(base_dir)
        root = rfs.generate(prototype, **self.options)
        faulty.calls.clear()
        rfs.remove(root)
        for step in range(1, len(faulty.calls) + 1):
            rfs, faulty = self._counted(base_dir)
            root = rfs.generate(prototype, **self.options)
            if self.real_mounts:
                with open(os.path.join(root, "etc/written"), "wb") as fh:
                    fh.write(b"data in the writable layer\n")
            faulty.calls.clear()
            faulty.fail_on = {step}
            with pytest.raises(RootFSError) as info:
                rfs.remove(root)
            failed = faulty.calls[-1]  # the call made to fail
            wanted = _remove_error(failed, root)
            assert info.value.error_id is wanted, f"step {step} ({failed.name}): {info.value}"
            assert isinstance(info.value.cause, OSError) and info.value.cause.errno == errno.EIO
            assert [i.root for i in rfs.instances()] == [root], f"step {step}: the record was dropped"
            assert os.path.isfile(os.path.join(prototype, "etc/hostname"))
            faulty.fail_on = set()
            rfs.remove(root)
            assert rfs.instances() == [] and mounts_of(rfs) == []
            self.assert_nothing_else_left(root)

    def assert_nothing_else_left(self, root: str) -> None:
        """Override to check what only the backend knows of (a helper
        process, say) is gone after a remove; the suite calls it after each."""


def _remove_error(call: Call, root: str) -> ErrorId:
    """The id the core reports when this call of a remove fails."""
    if call.name in ("umount", "fuse_unmount"):
        return ErrorId.ErrUnmountRoot if call.args[0] == root else ErrorId.ErrUnmountSubdir
    return ErrorId.ErrRemoveMountDir
