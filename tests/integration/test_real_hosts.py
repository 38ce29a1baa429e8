"""rootfs's promises on a real host, where mounts do not stay where they are made.

Every test session runs in a private mount namespace with ``/`` rprivate,
where a mount exists in one place only. A real host differs in two ways
(``rootfs_core/testing/neighbours.py`` says more), and each is met here:

- ``/`` is rshared (systemd makes it so): a bind of a shared mount joins its
  peer group and a mount below one reaches its peers and slaves. Tests that
  need it run in a fresh namespace whose ``/`` is rshared (the ``shared``
  fixture), whatever the session's mode; ``ROOTFS_TEST_PROPAGATION=shared``
  (``tox -e integration-shared``) runs every test of the session that way.
- other mount namespaces hold copies of our mounts: a container or a
  process chrooted into a root from a namespace of its own (``holder``,
  ``runc_container``), which remove must refuse without touching anything,
  and a namespace that merely copied our mounts without using them
  (``copier``), which must neither block remove nor lose the data under
  its copies.

Run as root: ``pytest -p no:cacheprovider tests/integration/test_real_hosts.py``
(and again with ``ROOTFS_TEST_PROPAGATION=shared``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from integration_support import assert_cli_error, cli_argv, cli_env, list_json, run_cli, text

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.syscalls import MS_UNBINDABLE, LinuxSyscalls
from rootfs_core.testing.checks import command_lines, mount_points, mounts_below, tree_checksum
from rootfs_core.testing.fixtures import assert_base_dir_clean
from rootfs_core.testing.neighbours import (
    HOLDS,
    Neighbour,
    copier,
    holder,
    in_shared_namespace,
    runc_container,
    shared_namespace,
    watcher,
)

REAL_BACKENDS = ("overlayfs", "quilt", "fuse-overlayfs")
# Where each backend keeps an instance's writable data, below its instance directory.
WRITABLE_DATA = {"overlayfs": "upper", "quilt": "rw", "fuse-overlayfs": "upper"}
INSTANCES = 5
_SHARED_FIELD = re.compile(rb"\bshared:[0-9]+\b")


# ------------------------------------------------------------------ fixtures
def _skip_unless_usable(name: str, base: str) -> None:
    """Skip, with the reason, where ``name`` is not installed or cannot work
    at all here (not root, no fuse-overlayfs program, no /dev/fuse). A
    backend that works where ``/`` is private but not here (the quilt's probe
    under shared propagation, before the fix) fails instead: that is the bug
    these tests are about, not a limit of the host."""
    if os.geteuid() != 0:
        pytest.skip("real mounts need root")
    try:
        probe = RootFS(base, backend=name).probe(name)
    except RootFSError as exc:  # not installed in this environment
        pytest.skip(f"{name}: {exc}")
    if probe.supported:
        return
    argv = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "--",
        *map(str, cli_argv(base, "backends", "--json")),
    ]
    private = subprocess.run(
        argv, capture_output=True, check=False, timeout=120, cwd="/", env={**cli_env(), "ROOTFS_CACHE": ""}
    )
    rows = json.loads(private.stdout) if private.returncode == 0 else []
    if any(row["name"] == name and row["supported"] for row in rows):
        pytest.fail(f"{name} works where / is private but not in this namespace: {probe.reason}")
    pytest.skip(f"{name} is not supported here: {probe.reason}")


@pytest.fixture(params=REAL_BACKENDS)
def real_backend(request: pytest.FixtureRequest, base_dir: str) -> str:
    """Each real backend in turn (fuse-overlayfs too, where installed),
    skipped with its probe's reason where it cannot work."""
    name: str = request.param
    _skip_unless_usable(name, base_dir)
    return name


@pytest.fixture
def shared(base_dir: str) -> Iterator[None]:
    """The test runs in a fresh mount namespace whose ``/`` is rshared, as on
    a systemd host, cut from the session's (nothing made in it reaches the
    session or the host). A mount the test leaves there fails it; a mount
    on the base directory itself is allowed (a fix may make the base
    directory a private mount of its own)."""
    with shared_namespace(keep=(base_dir,)) as ns:
        yield
    assert not ns.leaked, f"test left mounts in its shared namespace: {ns.leaked}"


def _instance_dir(root: str) -> str:
    return os.path.dirname(root)


def _state(rfs: RootFS, root: str) -> list[str]:
    return [i.state for i in rfs.instances() if i.root == root]


def _fuse_daemons(path: str) -> list[int]:
    """Live fuse-overlayfs processes whose command line mentions ``path``."""
    wanted = os.fsencode(path)
    return [
        pid
        for pid, argv in command_lines().items()
        if os.path.basename(argv[0]) == b"fuse-overlayfs" and any(wanted in a for a in argv)
    ]


def _finish(rfs: RootFS, root: str) -> None:
    """After a test failed half-way, once its neighbours are gone: take the
    instance apart if it is still there, so that the fixtures report the
    failure itself rather than what it left (they still fail on anything left)."""
    try:
        if any(i.root == root for i in rfs.instances()):
            rfs.remove(root)
        rfs.gc()
    except RootFSError:
        pass


def _fds(pid: int) -> list[str]:
    return [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]


def _write(path: str, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


# ------------------------------------------------------------------ the neighbours themselves
def test_neighbours_start_in_namespaces_of_their_own_and_stop_cleanly(
    scratch: Callable[[str], str], leak_guard: None
) -> None:
    """The helpers the other tests trust: each neighbour is in a mount
    namespace of its own, is what it claims to be (a holder chrooted with
    its file open, or using a directory only one other way; a copier using
    nothing), answers, and is gone (reaped) after its block, leaving no mount."""
    ours = os.readlink("/proc/self/ns/mnt")
    place = scratch("neighbours-")
    os.mkdir(os.path.join(place, "tmp"))
    with holder(place) as h:
        assert os.readlink(f"/proc/{h.pid}/ns/mnt") != ours
        assert os.readlink(f"/proc/{h.pid}/root") == place
        assert os.readlink(f"/proc/{h.pid}/cwd") == place
        assert os.path.join(place, "tmp/held") in _fds(h.pid)
        assert h.comm().startswith("python")
        assert h.read() == f"held by {h.pid}\n".encode()
        h.write(b"more\n")
        assert h.read() == f"held by {h.pid}\nmore\n".encode()
        assert _read(os.path.join(place, "tmp/held.1")) == b"more\n"
        assert h.can_write()
        held = h
    assert held.proc.returncode is not None and not os.path.exists(f"/proc/{held.pid}")
    for how in HOLDS[1:]:
        with holder(place, name=f"tmp/{how}", how=how) as h:
            path = os.path.join(place, "tmp", how)
            assert os.readlink(f"/proc/{h.pid}/ns/mnt") != ours
            assert os.readlink(f"/proc/{h.pid}/root") == "/"
            assert os.readlink(f"/proc/{h.pid}/cwd") == (os.path.dirname(path) if how == "cwd" else "/")
            assert (path in _fds(h.pid)) == (how == "open")
            with open(f"/proc/{h.pid}/maps") as fh:
                assert (path in fh.read()) == (how == "mapped")
            h.write(b"more\n")
            assert h.read() == _read(path) == f"held by {h.pid}\nmore\n".encode()
            held = h
        assert held.proc.returncode is not None and not os.path.exists(f"/proc/{held.pid}")
    with copier() as c:
        assert os.readlink(f"/proc/{c.pid}/ns/mnt") != ours
        assert os.readlink(f"/proc/{c.pid}/root") == "/" and os.readlink(f"/proc/{c.pid}/cwd") == "/"
        assert all(link.startswith(("pipe:", "/dev/null")) for link in _fds(c.pid)), _fds(c.pid)
        assert set(c.mount_points()) >= {"/", "/proc"}
        copied = c
    assert copied.proc.returncode is not None and not os.path.exists(f"/proc/{copied.pid}")


def test_shared_namespace_is_rshared_cut_from_ours_and_left_cleanly(
    scratch: Callable[[str], str], leak_guard: None
) -> None:
    """``shared_namespace``: ``/`` is shared in it, a slave neighbour
    (``watcher``) receives the mounts made in it, nothing made in it is seen
    outside, a mount left in it is reported and unmounted, and afterwards
    the process is back in its namespace and working directory."""
    ns_before, cwd_before = os.readlink("/proc/self/ns/mnt"), os.getcwd()
    place = scratch("shared-")
    with shared_namespace() as ns:
        assert os.readlink("/proc/self/ns/mnt") != ns_before
        with open("/proc/self/mountinfo", "rb") as fh:
            root_line = next(line for line in fh if line.split(b" ")[4] == b"/")
        assert _SHARED_FIELD.search(root_line), root_line
        with watcher() as w:
            LinuxSyscalls().mount("rootfs-test", place, "tmpfs", 0, "size=1M")
            assert w.mounts_below(place) == [place]
            LinuxSyscalls().umount(place, 0)
            assert w.mounts_below(place) == []
        LinuxSyscalls().mount("rootfs-test", place, "tmpfs", 0, "size=1M")  # left on purpose
    assert ns.leaked == [place]
    assert os.readlink("/proc/self/ns/mnt") == ns_before and os.getcwd() == cwd_before
    assert mounts_below(place) == []


def test_in_shared_namespace_runs_a_command_with_root_rshared(leak_guard: None) -> None:
    """``in_shared_namespace(argv)``: one command under a real host's propagation."""
    proc = subprocess.run(
        in_shared_namespace(["cat", "/proc/self/mountinfo"]), capture_output=True, check=True, timeout=60
    )
    root_line = next(line for line in proc.stdout.splitlines() if line.split(b" ")[4] == b"/")
    assert _SHARED_FIELD.search(root_line), root_line


def test_runc_container_runs_in_the_root_and_is_deleted(
    base_dir: str, busybox_prototype: str, tmp_path: Path
) -> None:
    """``runc_container``: the container runs ``sleep`` with the root as its
    ``/`` in a mount namespace of its own; afterwards runc knows it no more."""
    _skip_unless_usable("overlayfs", base_dir)
    rfs = RootFS(base_dir, backend="overlayfs")
    root = rfs.generate(busybox_prototype)
    try:
        with runc_container(root, str(tmp_path)) as c:
            assert os.readlink(f"/proc/{c.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
            with open(f"/proc/{c.pid}/comm") as fh:
                assert fh.read().strip() == "sleep"
            run = subprocess.run(
                ["runc", "exec", c.name, "sh", "-c", "echo from-container > /tmp/probe"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert run.returncode == 0, run.stderr
            assert _read(os.path.join(root, "tmp/probe")) == b"from-container\n"
            name = c.name
        state = subprocess.run(["runc", "state", name], capture_output=True, timeout=60, check=False)
        assert state.returncode != 0, state.stdout
    finally:
        rfs.remove(root)


# ------------------------------------------------------------------ a. shared propagation
@pytest.mark.parametrize("name", REAL_BACKENDS)
def test_instances_under_shared_propagation_stay_where_they_are_made(
    name: str, base_dir: str, shared: None, make_prototype: Callable[..., str]
) -> None:
    """In a namespace whose ``/`` is rshared, with no probe cache: the
    backend is supported (the quilt's probe said its write "reached the
    prototype"); five instances from one prototype each have exactly the
    mounts one has, no mount stacked twice, nothing below the prototype and
    nothing in a slave namespace (a service started before, as systemd's
    are) but at most the base directory's own mount; a write in one instance
    is seen neither in another nor in the prototype; every remove succeeds
    and leaves nothing; the prototype is unchanged."""
    if name == "fuse-overlayfs" and shutil.which("fuse-overlayfs") is None:
        pytest.skip("fuse-overlayfs is not installed (apt-get install fuse-overlayfs)")
    prototype = make_prototype()
    checksum = tree_checksum(prototype)
    proc = run_cli(base_dir, "backends", "--json", env={"ROOTFS_CACHE": ""})
    assert proc.returncode == 0, text(proc.stderr)
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    if name not in rows and name == "fuse-overlayfs":
        pytest.skip("rootfs-fuse-overlayfs is not installed in this environment")
    assert rows[name]["supported"], f"`rootfs backends` under shared propagation: {rows[name]}"
    rfs = RootFS(base_dir, backend=name)
    probe = rfs.probe(name)
    assert probe.supported, f"{name} probe under shared propagation: {probe.reason}"
    roots: list[str] = []
    with watcher() as service:
        try:
            roots.append(rfs.generate(prototype))
            one = mounts_below(_instance_dir(roots[0]))
            assert len(one) == len(set(one)) and roots[0] in one, one
            assert len(one) == (8 if name == "quilt" else 1), one  # quilt: the root and 7 default dirs
            roots += [rfs.generate(prototype) for _ in range(INSTANCES - 1)]
            _write(os.path.join(roots[0], "etc", "from-1"), b"instance 1\n")
            for other in roots[1:]:
                assert not os.path.lexists(os.path.join(other, "etc", "from-1")), f"seen in {other}"
            assert not os.path.lexists(os.path.join(prototype, "etc", "from-1"))
            assert _read(os.path.join(roots[0], "etc", "from-1")) == b"instance 1\n"
            for root in roots:
                mine = mounts_below(_instance_dir(root))
                assert len(mine) == len(one) and len(set(mine)) == len(mine), (root, mine)
            below = mounts_below(base_dir)
            extra = [p for p in below if not any(p.startswith(_instance_dir(r) + "/") for r in roots)]
            assert len(below) - len(extra) == INSTANCES * len(one), below
            assert extra in ([], [base_dir]), f"mounts below {base_dir} no instance explains: {extra}"
            assert mounts_below(prototype) == [], mounts_below(prototype)
            assert service.mounts_below(prototype) == []
            propagated = [p for p in service.mounts_below(base_dir) if p != base_dir]
            assert propagated == [], f"our mounts propagated into a slave namespace: {propagated}"
            for root in roots:
                rfs.remove(root)
            assert [p for p in mounts_below(base_dir) if p != base_dir] == []
            assert [p for p in service.mounts_below(base_dir) if p != base_dir] == []
            assert service.mounts_below(prototype) == [] and mounts_below(prototype) == []
            assert_base_dir_clean(base_dir)
            assert tree_checksum(prototype) == checksum
        finally:
            for root in roots:
                _finish(rfs, root)
            for point in reversed(mounts_below(prototype)):  # a propagated mount: never leave it
                LinuxSyscalls().umount(point, 0)


@pytest.mark.parametrize("name", REAL_BACKENDS)
def test_a_base_dir_on_an_unbindable_mount_fails_generate_clearly(
    name: str,
    shared: None,
    small_base: Callable[[str], str],
    make_prototype: Callable[..., str],
) -> None:
    """The base directory's mount is unbindable (``mount --make-unbindable``):
    generate fails with a ``RootFSError`` that says "unbindable", and
    nothing is left: no mount below the tmpfs but itself, no directory in
    the base directory but the state directory, no record, no marker."""
    if name == "fuse-overlayfs" and shutil.which("fuse-overlayfs") is None:
        pytest.skip("fuse-overlayfs is not installed (apt-get install fuse-overlayfs)")
    prototype = make_prototype()
    base = small_base("size=32M")
    tmpfs = os.path.dirname(base)
    LinuxSyscalls().mount("none", tmpfs, "", MS_UNBINDABLE, "")
    try:
        rfs = RootFS(base, backend=name)  # refusing the base directory at once is as good
        root = rfs.generate(prototype)
    except RootFSError as exc:
        error = exc
    else:
        rfs.remove(root)
        pytest.fail(f"{name}: generate succeeded in {base}, on an unbindable mount")
    assert "unbindable" in str(error), str(error)
    assert mounts_below(tmpfs) == [tmpfs], mounts_below(tmpfs)
    assert_base_dir_clean(base)


# ------------------------------------------------------------------ b. a neighbour using the root
def _assert_refused_and_untouched(
    rfs: RootFS, root: str, before: list[str], pid: int, comm: str | None
) -> RootFSError:
    """remove fails with ErrRootBusy naming ``pid`` (and ``comm``), and
    nothing at all was unmounted or deleted."""
    with pytest.raises(RootFSError) as info:
        rfs.remove(root)
    error = info.value
    assert error.error_id is ErrorId.ErrRootBusy, str(error)
    named = f"{pid} ({comm})" if comm is not None else str(pid)
    assert re.search(rf"(?<![0-9]){re.escape(named)}", str(error)), f"{named!r} not named in: {error}"
    assert LinuxSyscalls().is_mountpoint(root)
    assert mounts_below(_instance_dir(root)) == before
    assert _state(rfs, root) == ["ready"]
    return error


@pytest.mark.parametrize("how", HOLDS)
def test_a_neighbour_using_the_root_keeps_it(
    real_backend: str, base_dir: str, prototype: str, how: str
) -> None:
    """A process using the root from a mount namespace of its own (chrooted
    into it with a file open, as a container; or only a file open, only its
    working directory, only a mapping): remove raises ``ErrRootBusy`` naming
    it ("PID (python3)") and unmounts nothing; its file is intact and it can
    still write; once it is gone, remove succeeds and leaves nothing."""
    rfs = RootFS(base_dir, backend=real_backend)
    root = rfs.generate(prototype)
    try:
        _write(os.path.join(root, "tmp", "ours"), b"written by the test\n")
        before = mounts_below(_instance_dir(root))
        with holder(root, how=how) as h:
            held = h.read()
            _assert_refused_and_untouched(rfs, root, before, h.pid, h.comm())
            assert h.read() == held
            h.write(b"after the refused remove\n")
            assert h.read() == held + b"after the refused remove\n"
            assert h.can_write()
            assert _read(os.path.join(root, "tmp", "held")) == h.read()
            assert _read(os.path.join(root, "tmp", "ours")) == b"written by the test\n"
            assert h.alive()
        rfs.remove(root)
        assert_base_dir_clean(base_dir)
        if real_backend == "fuse-overlayfs":
            assert _fuse_daemons(_instance_dir(root)) == []
    finally:
        _finish(rfs, root)


def test_a_neighbour_chrooted_into_the_root_keeps_it_through_the_cli(
    real_backend: str, base_dir: str, prototype: str
) -> None:
    """The same through ``rootfs remove``: exit 1, ``ErrRootBusy`` and the
    holder's pid on stderr, every mount still there; works once it is gone."""
    rfs = RootFS(base_dir, backend=real_backend)
    root = rfs.generate(prototype)
    try:
        before = mounts_below(_instance_dir(root))
        with holder(root) as h:
            held = h.read()
            failed = run_cli(base_dir, "remove", root)
            assert_cli_error(failed, "ErrRootBusy")
            assert re.search(rf"(?<![0-9]){h.pid} \({re.escape(h.comm())}\)", text(failed.stderr)), text(
                failed.stderr
            )
            assert mounts_below(_instance_dir(root)) == before
            assert _state(rfs, root) == ["ready"]
            assert h.read() == held and h.can_write()
        again = run_cli(base_dir, "remove", root)
        assert again.returncode == 0, text(again.stderr)
        assert_base_dir_clean(base_dir)
    finally:
        _finish(rfs, root)


def test_a_running_container_keeps_its_root(
    real_backend: str, base_dir: str, busybox_prototype: str, tmp_path: Path
) -> None:
    """runc runs a container in the root (its own mount namespace, the root
    pivoted to): remove raises ``ErrRootBusy`` naming its pid and unmounts
    nothing, and the container keeps working in its root; once runc has
    deleted it, remove succeeds and leaves nothing."""
    rfs = RootFS(base_dir, backend=real_backend)
    root = rfs.generate(busybox_prototype)
    try:
        before = mounts_below(_instance_dir(root))
        with runc_container(root, str(tmp_path)) as c:
            _assert_refused_and_untouched(rfs, root, before, c.pid, None)
            run = subprocess.run(
                ["runc", "exec", c.name, "sh", "-c", "echo still > /tmp/after && cat /etc/hostname"],
                capture_output=True,
                timeout=60,
                check=False,
            )
            assert run.returncode == 0, run.stderr.decode(errors="replace")
            assert run.stdout == _read(os.path.join(busybox_prototype, "etc/hostname"))
            assert _read(os.path.join(root, "tmp", "after")) == b"still\n"
        rfs.remove(root)
        assert_base_dir_clean(base_dir)
    finally:
        _finish(rfs, root)


# ------------------------------------------------------------------ c. a neighbour that merely copied
def _assert_data_kept(backend: str, root: str, written: bytes) -> None:
    """The instance's writable data, with what the test wrote through the
    root, is still on disk."""
    data = os.path.join(_instance_dir(root), WRITABLE_DATA[backend])
    assert os.path.isdir(data), f"{data} was deleted while a neighbour still had it mounted"
    if backend == "quilt":
        (etc,) = [d for d in os.listdir(data) if d.endswith("-etc")]
        assert _read(os.path.join(data, etc, "written")) == written
    else:
        assert _read(os.path.join(data, "etc", "written")) == written


def _still_copied(neighbour: Neighbour, root: str) -> None:
    """The neighbour's copy of the root is still mounted (nothing deleted
    under it detached it)."""
    assert root in neighbour.mounts_below(_instance_dir(root)), neighbour.mounts_below(_instance_dir(root))


def test_a_namespace_that_merely_copied_the_mounts_does_not_block_remove(
    real_backend: str, base_dir: str, prototype: str
) -> None:
    """A namespace made after the generate holds copies of the instance's
    mounts but uses none: remove succeeds (no "daemon still running" for
    fuse-overlayfs), the root is no longer mounted here, the writable data
    stays on disk while the copy lives (listed as "removing"; gc leaves it
    alone); once the namespace is gone, gc finishes it and nothing is left."""
    rfs = RootFS(base_dir, backend=real_backend)
    root = rfs.generate(prototype)
    written = b"written through the root\n"
    try:
        _write(os.path.join(root, "etc", "written"), written)
        with copier() as c:
            _still_copied(c, root)
            rfs.remove(root)
            assert mounts_below(_instance_dir(root)) == [], mounts_below(_instance_dir(root))
            assert root not in mount_points()
            _assert_data_kept(real_backend, root, written)
            assert _state(rfs, root) == ["removing"]
            assert [(r["root"], r["state"]) for r in list_json(base_dir)] == [(root, "removing")]
            _still_copied(c, root)
            report = rfs.gc()
            assert os.path.basename(_instance_dir(root)) not in report.instances, report
            assert not any(p.startswith(_instance_dir(root) + "/") for p in report.orphans), report
            _assert_data_kept(real_backend, root, written)
            assert _state(rfs, root) == ["removing"]
            _still_copied(c, root)
            assert c.alive()
        rfs.gc()
        assert_base_dir_clean(base_dir)
        if real_backend == "fuse-overlayfs":
            assert _fuse_daemons(_instance_dir(root)) == []
    finally:
        _finish(rfs, root)


def test_namespaces_made_before_the_generate_do_not_delay_remove(
    real_backend: str, base_dir: str, shared: None, prototype: str
) -> None:
    """Namespaces made *before* the generate, on a host whose ``/`` is
    shared: a private one (it copied nothing of the instance) and a slave
    one (nothing may propagate into it). Neither holds anything of the
    instance, so remove finishes at once: nothing "removing", nothing left."""
    with copier() as before_private, watcher() as before_slave:
        rfs = RootFS(base_dir, backend=real_backend)
        root = rfs.generate(prototype)
        try:
            _write(os.path.join(root, "etc", "written"), b"x\n")
            copied = before_private.mounts_below(_instance_dir(root))
            assert copied == [], f"mounts reached a private namespace made before: {copied}"
            propagated = before_slave.mounts_below(_instance_dir(root))
            assert propagated == [], f"mounts propagated into a slave namespace: {propagated}"
            rfs.remove(root)
            assert rfs.instances() == []
            assert_base_dir_clean(base_dir)
            if real_backend == "fuse-overlayfs":
                assert _fuse_daemons(_instance_dir(root)) == []
        finally:
            _finish(rfs, root)
