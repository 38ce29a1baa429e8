"""The backend as root: what it says of itself, a root's life from generate to
remove (no mount, directory or daemon left), its daemon journaled, dying,
hanging or impersonated, the prototype mount's protections kept, and the
paths it must escape or refuse."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest
from rootfs_fuse_overlayfs import backend

from rootfs_core import ErrorId, RootFS, RootFSError, teardown
from rootfs_core.hookspecs import BAND_OTHER_UNION
from rootfs_core.mounttable import filesystem_of
from rootfs_core.store import Step, Store
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts, mount_options
from rootfs_core.testing.conformance import assert_removed_for_good
from rootfs_core.testing.fixtures import assert_base_dir_clean, remove_scratch, scratch_dir
from rootfs_core.testing.prototypes import make_tiny_prototype

Daemons = Callable[[str], list[str]]


def start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks), read here
    rather than through the core; None for no process, or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == b"Z" else fields[19].decode()


def serving_daemons(root: str) -> list[int]:
    """The pids of the fuse-overlayfs processes (of any user) whose last
    argument is ``root``: how the backend once told its daemon, impostors
    included."""
    found = []
    for name in os.listdir("/proc"):
        try:
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                argv = fh.read().split(b"\0")[:-1]
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"fuse-overlayfs" and argv[-1] == os.fsencode(root):
            found.append(int(name))
    return found


def daemon_steps(base_dir: str, root: str) -> list[Step]:
    """The ``daemon`` steps of the journal of the instance at ``root``."""
    record = Store(base_dir).read(os.path.basename(os.path.dirname(root)))
    assert record is not None, f"no record for {root}"
    return [step for step in record.steps if step.op == "daemon"]


def journaled_daemon(base_dir: str, root: str) -> int:
    """The pid of the daemon the journal of ``root`` names."""
    [step] = daemon_steps(base_dir, root)
    return int(step.detail.partition(":")[0])


def is_whiteout(path: str) -> bool:
    """fuse-overlayfs marks a deleted name with a 0/0 character device, or
    with a ``.wh.`` file where it cannot make one."""
    if os.path.lexists(path):
        st = os.lstat(path)
        return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    head, tail = os.path.split(path)
    return os.path.lexists(os.path.join(head, ".wh." + tail))


def test_priority_sits_in_the_other_union_band_below_kernel_overlay_and_aufs() -> None:
    info = backend.rootfs_backend_info()
    assert info.priority == 220 and info.priority in BAND_OTHER_UNION
    assert info.priority < 250  # aufs
    assert info.options == {}


def test_supported_here(rfs: RootFS) -> None:
    status = {s.name: s for s in rfs.backends()}["fuse-overlayfs"]
    assert (status.supported, status.reason, status.priority) == (True, None, 220)


def test_generate_write_delete_read_then_remove_leaves_nothing(
    rfs: RootFS, base_dir: str, prototype: str, daemons: Daemons
) -> None:
    root = rfs.generate(prototype)
    instance = os.path.dirname(root)
    assert instance_mounts(base_dir) == [root]
    assert filesystem_of(root) == ("fuse.fuse-overlayfs", root)
    assert len(daemons(root)) == 1
    # read: the prototype, every kind of file
    assert sorted(os.listdir(root)) == sorted(os.listdir(prototype))
    with open(f"{root}/etc/deep/er/file", "rb") as fh:
        assert fh.read() == b"deep\n"
    assert os.readlink(f"{root}/bin") == "usr/bin"
    assert stat.S_ISFIFO(os.lstat(f"{root}/dev/fifo").st_mode)
    # write: a new file and a changed one
    with open(f"{root}/etc/new", "wb") as fh:
        fh.write(b"new\n")
    with open(f"{root}/etc/passwd", "ab") as fh:
        fh.write(b"user:x:1000:1000::/home/user:/bin/sh\n")
    # delete: a file and a whole prototype directory
    os.unlink(f"{root}/etc/hostname")
    os.unlink(f"{root}/etc/deep/er/file")
    os.rmdir(f"{root}/etc/deep/er")
    assert sorted(os.listdir(f"{root}/etc")) == ["deep", "hostname.link", "new", "passwd"]
    with open(f"{root}/etc/passwd", "rb") as fh:
        assert fh.read().endswith(b"/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n")
    # the changes are in the upper layer, the prototype is untouched
    assert is_whiteout(f"{instance}/upper/etc/hostname")
    assert is_whiteout(f"{instance}/upper/etc/deep/er")
    assert os.path.isfile(f"{prototype}/etc/hostname") and not os.path.exists(f"{prototype}/etc/new")
    rfs.remove(root)
    assert not os.path.exists(instance)
    assert instance_mounts(base_dir) == []
    assert daemons(base_dir) == []


def test_root_shows_the_mode_and_owner_of_the_prototype_root(rfs: RootFS, leak_guard: None) -> None:
    holder = scratch_dir("owner-")
    try:
        proto = make_tiny_prototype(os.path.join(holder, "prototype"))
        os.chown(proto, 1234, 5678)
        os.chmod(proto, 0o750)
        root = rfs.generate(proto)
        st = os.stat(root)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o750)
        rfs.remove(root)
    finally:
        remove_scratch(holder)


def test_instances_are_isolated(rfs: RootFS, prototype: str) -> None:
    first, second = rfs.generate(prototype), rfs.generate(prototype)
    with open(f"{first}/etc/only-first", "wb") as fh:
        fh.write(b"1\n")
    os.unlink(f"{second}/etc/hostname")
    assert not os.path.exists(f"{second}/etc/only-first")
    assert os.path.isfile(f"{first}/etc/hostname")
    rfs.remove(first)
    assert os.path.isfile(f"{second}/home/readme")  # the other one still works
    rfs.remove(second)


def test_a_second_remove_says_no_such_root_unless_missing_ok(rfs: RootFS, prototype: str) -> None:
    root = rfs.generate(prototype)
    assert rfs.remove(root) is True
    assert_removed_for_good(rfs, root)


def test_the_journal_names_the_daemon_by_pid_and_start_time(
    rfs: RootFS, base_dir: str, prototype: str
) -> None:
    root = rfs.generate(prototype)
    record = Store(base_dir).read(rfs.instances()[0].id)
    assert record is not None
    ops = [step.op for step in record.steps]
    # the daemon step follows its mount, so it is undone (waited for) after
    # the unmount and before upper and work are deleted
    assert ops[-2:] == ["fuse-mount", "daemon"]
    step = record.steps[-1]
    assert step.path == root
    [pid] = serving_daemons(root)  # found here independently of the core
    assert step.detail == f"{pid}:{start_time(pid)}"
    assert "/dev/fuse" in [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert rfs.remove(root) is True
    assert start_time(pid) is None  # it exited (a zombie at most) before remove returned


def test_root_of_a_killed_daemon_is_still_removed(rfs: RootFS, base_dir: str, prototype: str) -> None:
    root = rfs.generate(prototype)
    pid = journaled_daemon(base_dir, root)
    os.kill(pid, signal.SIGKILL)
    assert rfs.remove(root) is True
    assert_base_dir_clean(base_dir)


class StopDaemonToUnmount(LinuxSyscalls):
    """Stops the daemon just before unmounting for real, so it cannot exit: a
    daemon that hangs on its way out. (Stopped any earlier, it would hang every
    process that looks at its mount, the remove first; a stopped daemon does
    not keep fusermount3 -u from unmounting.)"""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def fuse_unmount(self, target: str) -> None:
        os.kill(self.pid, signal.SIGSTOP)
        super().fuse_unmount(target)


def test_daemon_that_does_not_exit_fails_clearly_and_keeps_the_record(
    rfs: RootFS, base_dir: str, prototype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(teardown, "DAEMON_EXIT_TIMEOUT", 0.3)
    root = rfs.generate(prototype)
    pid = journaled_daemon(base_dir, root)
    try:
        with pytest.raises(RootFSError) as exc:
            RootFS(base_dir, syscalls=StopDaemonToUnmount(pid)).remove(root)
        assert exc.value.error_id is ErrorId.ErrUnmountRoot
        assert f"(pid {pid})" in str(exc.value) and f"kill {pid}" in str(exc.value)
        assert [i.root for i in rfs.instances()] == [root]
        assert os.path.isdir(f"{os.path.dirname(root)}/upper")  # nothing deleted under a live daemon
        assert len(daemon_steps(base_dir, root)) == 1  # still to be waited for
    finally:
        os.kill(pid, signal.SIGCONT)
    assert rfs.remove(root) is True
    assert_base_dir_clean(base_dir)


class ImpostorAtMount(LinuxSyscalls):
    """Starts, just before the real mount, a process of another user that
    looks like the daemon in every way but its owner: named fuse-overlayfs,
    the root as its last argument, /dev/fuse open (root opens it and hands
    it over: on most hosts /dev/fuse is mode 0666 anyway). It runs when the
    core looks for the daemon (and, started first, has the lower pid) and
    when remove waits for it."""

    def __init__(self, user: pwd.struct_passwd) -> None:
        self.user = user
        self.armed = False  # not for the probe's mount
        self.impostors: list[subprocess.Popen[bytes]] = []

    def run_mount_program(self, argv: list[str], target: str) -> None:
        if not self.armed:
            super().run_mount_program(argv, target)
            return
        fuse = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        try:
            self.impostors.append(
                subprocess.Popen(
                    ["fuse-overlayfs", "-c", "import time; time.sleep(120)", target],
                    executable=IMPOSTOR_PYTHON,
                    user=self.user.pw_uid,
                    group=self.user.pw_gid,
                    extra_groups=[],
                    pass_fds=[fuse],
                    cwd="/",
                    stdin=subprocess.DEVNULL,
                )
            )
        finally:
            os.close(fuse)
        super().run_mount_program(argv, target)


IMPOSTOR_PYTHON = "/usr/bin/python3"  # any user may run it (a virtualenv's may be under /root)


@pytest.fixture
def nobody() -> pwd.struct_passwd:
    if not os.access(IMPOSTOR_PYTHON, os.X_OK):
        pytest.skip(f"{IMPOSTOR_PYTHON} is missing: the impostor runs it")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' to run the impostor as")


def test_an_impostor_of_another_user_neither_is_journaled_nor_delays_remove(
    rfs: RootFS, base_dir: str, prototype: str, nobody: pwd.struct_passwd
) -> None:
    """Any user can start a process named fuse-overlayfs with a root's path
    as its last argument; the daemon is known by owner, pid and start time,
    so remove neither waits for the impostor nor touches it."""
    syscalls = ImpostorAtMount(nobody)
    try:
        with_impostor = RootFS(base_dir, backend="fuse-overlayfs", syscalls=syscalls)
        assert with_impostor.probe("fuse-overlayfs").supported
        syscalls.armed = True
        root = with_impostor.generate(prototype)
        [impostor] = syscalls.impostors
        assert impostor.poll() is None
        born = start_time(impostor.pid)
        with open(f"/proc/{impostor.pid}/status", encoding="ascii") as fh:
            [uids] = [line.split()[1:] for line in fh if line.startswith("Uid:")]
        assert uids == [str(nobody.pw_uid)] * 4
        [real] = [pid for pid in serving_daemons(root) if pid != impostor.pid]
        assert sorted(serving_daemons(root)) == sorted([impostor.pid, real])  # the impostor looks the part
        assert journaled_daemon(base_dir, root) == real
        started = time.monotonic()
        assert rfs.remove(root) is True
        took = time.monotonic() - started
        assert took < teardown.DAEMON_EXIT_TIMEOUT / 5, f"remove took {took:.2f}s"
        assert_base_dir_clean(base_dir)
        assert impostor.poll() is None and start_time(impostor.pid) == born  # untouched
    finally:
        for started_impostor in syscalls.impostors:
            started_impostor.kill()
            started_impostor.wait()


@pytest.fixture
def restricted_place() -> Iterator[Callable[[int], str]]:
    """``place(flags)``: a tiny prototype on a tmpfs mounted with ``flags``
    (MS_NOSUID, MS_NODEV, MS_NOEXEC), which also holds a copy of ``id``
    set-uid to nobody (``usr/bin/suid-id``) and ``true`` (``usr/bin/true``).
    Unmounted and deleted afterwards."""
    holder = scratch_dir("restricted-")
    mounted: list[str] = []

    def place(flags: int) -> str:
        point = os.path.join(holder, str(len(mounted)))
        os.mkdir(point)
        LinuxSyscalls().mount("tmpfs", point, "tmpfs", flags, "mode=0755")
        mounted.append(point)
        proto = make_tiny_prototype(os.path.join(point, "prototype"))
        for name, program in (("suid-id", "id"), ("true", "true")):
            found = shutil.which(program)
            assert found is not None, f"{program} is not installed"
            shutil.copy(found, os.path.join(proto, "usr/bin", name))
        os.chown(os.path.join(proto, "usr/bin/suid-id"), pwd.getpwnam("nobody").pw_uid, 0)
        os.chmod(os.path.join(proto, "usr/bin/suid-id"), 0o4755)
        return proto

    try:
        yield place
    finally:
        for point in reversed(mounted):
            LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)
        remove_scratch(holder)


def test_a_nodev_nosuid_prototype_gives_a_nodev_nosuid_root(
    rfs: RootFS, restricted_place: Callable[[int], str]
) -> None:
    proto = restricted_place(os.ST_NODEV | os.ST_NOSUID)
    root = rfs.generate(proto)
    try:
        flags = mount_options(root)
        assert {"nodev", "nosuid"} <= flags and "noexec" not in flags
        # a device node of the prototype cannot be opened in the root
        assert stat.S_ISCHR(os.lstat(f"{root}/dev/null").st_mode)
        with pytest.raises(OSError) as exc:
            open(f"{root}/dev/null", "rb").close()
        assert exc.value.errno in (errno.EACCES, errno.EPERM)
        # a set-uid program keeps its bit in the root but gains nothing
        assert os.stat(f"{root}/usr/bin/suid-id").st_mode & stat.S_ISUID
        ran = subprocess.run([f"{root}/usr/bin/suid-id", "-u"], capture_output=True, text=True, check=True)
        assert ran.stdout.strip() == str(os.geteuid())
    finally:
        rfs.remove(root)


def test_a_noexec_prototype_gives_a_noexec_root(rfs: RootFS, restricted_place: Callable[[int], str]) -> None:
    proto = restricted_place(os.ST_NOEXEC)
    root = rfs.generate(proto)
    try:
        assert "noexec" in mount_options(root)
        with pytest.raises(PermissionError):
            subprocess.run([f"{root}/usr/bin/true"], check=False)
    finally:
        rfs.remove(root)


def test_paths_with_commas_and_backslashes(rfs: RootFS, leak_guard: None) -> None:
    """libfuse splits -o at ',' and reads '\\' as an escape; both are escaped."""
    holder = scratch_dir("odd-")
    try:
        proto = make_tiny_prototype(os.path.join(holder, "a,b\\c d=e"))
        root = rfs.generate(proto)
        assert sorted(os.listdir(root)) == sorted(os.listdir(proto))
        rfs.remove(root)
    finally:
        remove_scratch(holder)


def test_prototype_path_with_a_colon_is_refused(rfs: RootFS, base_dir: str, leak_guard: None) -> None:
    holder = scratch_dir("colon-")
    try:
        proto = make_tiny_prototype(os.path.join(holder, "a:b"))
        with pytest.raises(RootFSError) as exc:
            rfs.generate(proto)
        assert exc.value.error_id is ErrorId.ErrBindMountRoot
        assert "contains ':'" in str(exc.value)
        assert_base_dir_clean(base_dir)
    finally:
        remove_scratch(holder)


def test_probe_says_the_program_is_missing(
    as_root: None, base_dir: str, monkeypatch: pytest.MonkeyPatch, tmp_path: str
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    probe = RootFS(base_dir, backend="fuse-overlayfs").probe("fuse-overlayfs")
    assert not probe.supported
    assert probe.reason is not None and "apt-get install fuse-overlayfs" in probe.reason


def test_probe_says_the_fuse_device_is_missing(
    as_root: None, base_dir: str, prototype: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend, "FUSE_DEVICE", "/dev/no-such-fuse")
    rfs = RootFS(base_dir, backend="fuse-overlayfs")
    probe = rfs.probe("fuse-overlayfs")
    assert not probe.supported
    assert probe.reason is not None and "ENOENT" in probe.reason and "modprobe fuse" in probe.reason
    with pytest.raises(RootFSError) as exc:
        rfs.generate(prototype)
    assert exc.value.error_id is ErrorId.ErrBackendUnsupported
