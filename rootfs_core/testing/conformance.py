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
- ``options``: options passed to every generate.

With ``real_mounts`` and a probe that says "not supported", the tests skip
with the probe's reason: a skip, never a pass. The fixtures ``base_dir`` and
``prototype`` (from ``rootfs_core.testing.fixtures``) fail any test that
leaves a mount, a directory or a record, or changes the prototype.

``python -m rootfs_core.testing NAME`` runs both classes against an installed
backend without writing any code.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from typing import ClassVar

import pytest

from rootfs_core import basedir, hookspecs
from rootfs_core.core import RootFS
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.hookspecs import Probe
from rootfs_core.registry import Registry
from rootfs_core.syscalls import LinuxSyscalls, Syscalls
from rootfs_core.testing.checks import instance_mounts
from rootfs_core.testing.faults import Call, FakeMounts, FaultySyscalls
from rootfs_core.testing.prototypes import ODD_NAME

BANDS = (
    hookspecs.BAND_KERNEL_UNION,
    hookspecs.BAND_OTHER_UNION,
    hookspecs.BAND_COPY,
    hookspecs.BAND_LAST_RESORT,
)


class BackendConformance:
    """Inherit, set ``backend``; see the module's docstring."""

    backend: ClassVar[str]
    real_mounts: ClassVar[bool] = True
    writable: ClassVar[tuple[str, ...]] = ("etc", "tmp")
    options: ClassVar[dict[str, str]] = {}

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
            rfs._probes[self.backend] = Probe.ok()
        probe = rfs.probe(self.backend)
        if not probe.supported:
            pytest.skip(f"{self.backend} is not supported here: {probe.reason}")
        return rfs

    @pytest.fixture
    def rfs(self, base_dir: str) -> RootFS:
        return self.make_rootfs(base_dir, self.make_syscalls())

    def _mounts(self, rfs: RootFS) -> list[str]:
        """Mounts below the base dir, real and (with FakeMounts) simulated."""
        syscalls = rfs.syscalls.inner if isinstance(rfs.syscalls, FaultySyscalls) else rfs.syscalls
        simulated = list(syscalls.mounted) if isinstance(syscalls, FakeMounts) else []
        return simulated + instance_mounts(rfs.base_dir)

    def _need_real_mounts(self) -> None:
        if not self.real_mounts:
            pytest.skip("reads files through the root: needs real mounts")

    # ---------------------------------------------------------- describing itself
    def test_describes_itself_within_a_band(self) -> None:
        backend = Registry.discover().get(self.backend)
        assert backend.info is not None
        assert any(backend.info.priority in band for band in BANDS), backend.info.priority
        assert backend.info.summary.strip()
        assert set(self.options) <= set(backend.info.options)

    def test_probe_explains_itself(self, base_dir: str) -> None:
        probe = RootFS(base_dir, backend=self.backend).probe(self.backend)
        assert isinstance(probe, Probe)
        if not probe.supported:
            assert isinstance(probe.reason, str) and probe.reason.strip()

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

    # ---------------------------------------------------------- removal
    def test_remove_leaves_nothing_and_a_second_is_not_found(self, rfs: RootFS, prototype: str) -> None:
        """A second remove of the same root says ``ErrNoSuchRoot`` (a script
        with a stale path learns of it) unless ``missing_ok``."""
        root = rfs.generate(prototype, **self.options)
        assert rfs.syscalls.is_mountpoint(root)
        assert [(i.root, i.state) for i in rfs.instances()] == [(root, "ready")]
        assert rfs.remove(root) is True
        assert rfs.instances() == []
        assert self._mounts(rfs) == []
        assert not os.path.lexists(os.path.dirname(root))
        self.assert_nothing_else_left(root)
        with pytest.raises(RootFSError) as info:
            rfs.remove(root)
        assert info.value.error_id is ErrorId.ErrNoSuchRoot
        assert rfs.remove(root, missing_ok=True) is True
        assert os.listdir(rfs.base_dir) == [".rootfs"]

    def test_a_busy_root_is_refused_untouched_then_removed(self, rfs: RootFS, prototype: str) -> None:
        """A process in the root: remove fails with ``ErrRootBusy`` before
        touching anything (the root stays ready and whole), then works."""
        self._need_real_mounts()
        root = rfs.generate(prototype, **self.options)
        before = self._mounts(rfs)
        holder = subprocess.Popen(["sleep", "60"], cwd=root)
        try:
            with pytest.raises(RootFSError) as info:
                rfs.remove(root)
            assert info.value.error_id is ErrorId.ErrRootBusy
            assert self._mounts(rfs) == before
            assert [(i.root, i.state) for i in rfs.instances()] == [(root, "ready")]
            with open(os.path.join(root, "etc/hostname")) as fh:
                assert fh.read() == "prototype\n"
        finally:
            holder.kill()
            holder.wait()
        rfs.remove(root)
        assert self._mounts(rfs) == []

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
            assert self._mounts(rfs) == [], f"step {step}: a mount was left"
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
            assert rfs.instances() == [] and self._mounts(rfs) == []
            self.assert_nothing_else_left(root)

    def assert_nothing_else_left(self, root: str) -> None:
        """Override to check what only the backend knows of (a helper
        process, say) is gone after a remove; the suite calls it after each."""


def _remove_error(call: Call, root: str) -> ErrorId:
    """The id the core reports when this call of a remove fails."""
    if call.name in ("umount", "fuse_unmount"):
        return ErrorId.ErrUnmountRoot if call.args[0] == root else ErrorId.ErrUnmountSubdir
    return ErrorId.ErrRemoveMountDir
