"""State on disk is not trusted, states are honest, refused commands write
nothing, aliases are seen through (issue: "safe on real hosts", items 3 to
7 and 9). Each test is the reproduction of a bug the previous release had.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from integration_support import assert_cli_error, require_backends, run_cli, text

from rootfs_core import ErrorId, RootFS, RootFSError
from rootfs_core.store import Store
from rootfs_core.syscalls import MS_BIND, UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts, mount_points, tree_checksum
from rootfs_core.testing.faults import FaultySyscalls

Scratch = Callable[[str], str]


def _victim(scratch: Scratch) -> tuple[str, str]:
    """A directory outside every base directory, and its checksum."""
    victim = scratch("victim-")
    os.makedirs(os.path.join(victim, "0-etc", "keep"))
    with open(os.path.join(victim, "0-etc", "keep", "data"), "w") as fh:
        fh.write("host data\n")
    return victim, tree_checksum(victim)


def _plant(base: str, instance_id: str, lines: list[object]) -> None:
    store = Store(base)
    store.ensure()
    with open(store.record_path(instance_id), "w") as fh:
        fh.writelines(json.dumps(line) + "\n" for line in lines)
    os.chmod(store.record_path(instance_id), 0o600)


def _header(base: str, instance_id: str, **changes: object) -> dict[str, object]:
    header: dict[str, object] = {
        "id": instance_id,
        "backend": "quilt",
        "prototype": "/nonexistent",
        "root": os.path.join(base, instance_id, "root"),
        "created": 0.0,
        "options": {},
    }
    header.update(changes)
    return header


# ------------------------------------------------------------------ 3. untrusted records
@pytest.mark.parametrize("lie", ["id", "root"])
def test_a_record_whose_header_points_elsewhere_moves_nothing_outside(
    base_dir: str, scratch: Scratch, lie: str
) -> None:
    """A header whose id or root differs from its file's name once moved the
    instance directory outside the base: the record is refused, and a
    remove takes apart only what is really in the instance's directory."""
    victim, before = _victim(scratch)
    instance_id = "a" * 12
    os.mkdir(os.path.join(base_dir, instance_id), 0o755)
    changes = {"id": "b" * 12} if lie == "id" else {"root": os.path.join(victim, "root")}
    _plant(base_dir, instance_id, [_header(base_dir, instance_id, **changes)])
    rfs = RootFS(base_dir)
    (listed,) = rfs.instances()
    assert listed.id == instance_id and listed.root == os.path.join(base_dir, instance_id, "root")
    assert rfs.remove(instance_id) is True
    assert tree_checksum(victim) == before
    assert sorted(os.listdir(base_dir)) == [".rootfs"]


def test_a_symlink_in_a_middle_component_is_never_followed(base_dir: str, scratch: Scratch) -> None:
    """The journal names ``<id>/rw/0-etc`` and someone made ``<id>/rw`` a
    symlink to a host directory: the previous release deleted the host's
    ``0-etc`` through it. Refused, nothing touched, whoever wrote it."""
    victim, before = _victim(scratch)
    instance_id = "c" * 12
    instance_dir = os.path.join(base_dir, instance_id)
    os.mkdir(instance_dir, 0o755)
    os.mkdir(os.path.join(instance_dir, "root"), 0o755)
    os.symlink(victim, os.path.join(instance_dir, "rw"))
    steps = [
        ["dir", instance_dir, "ErrRemoveMountDir"],
        ["dir", os.path.join(instance_dir, "root"), "ErrRemoveMountDir"],
        ["tree", os.path.join(instance_dir, "rw", "0-etc"), "ErrRemoveMountDir"],
    ]
    _plant(base_dir, instance_id, [_header(base_dir, instance_id), *steps])
    with pytest.raises(RootFSError) as info:
        RootFS(base_dir).remove(instance_id)
    assert info.value.error_id is ErrorId.ErrRecord and "symlink" in str(info.value)
    assert tree_checksum(victim) == before
    os.unlink(os.path.join(instance_dir, "rw"))  # the base_dir fixture checks the rest goes
    RootFS(base_dir).remove(instance_id)


@pytest.mark.parametrize("bad", ["op", "error", "outside", "types", "dotdot"])
def test_a_journal_of_the_wrong_shape_is_refused_before_any_hook(
    base_dir: str, scratch: Scratch, bad: str
) -> None:
    """A journal line of an unknown op, an unknown error id, a path outside
    the instance (also through ``..``) or fields of the wrong types: the
    record is unusable, the backend's remove hook never runs, nothing
    outside the instance is touched, and there is no traceback."""
    victim, before = _victim(scratch)
    instance_id = "d" * 12
    instance_dir = os.path.join(base_dir, instance_id)
    os.mkdir(instance_dir, 0o755)
    line: object = {
        "op": ["rm-rf", instance_dir, "ErrRemoveMountDir"],
        "error": ["tree", instance_dir, "ErrNoSuchThing"],
        "outside": ["tree", os.path.join(victim, "0-etc"), "ErrRemoveMountDir"],
        "types": ["tree", 7, None],
        "dotdot": ["tree", f"{instance_dir}/../../{os.path.basename(victim)}", "ErrRemoveMountDir"],
    }[bad]
    _plant(base_dir, instance_id, [_header(base_dir, instance_id), line])
    with pytest.raises(RootFSError) as info:
        RootFS(base_dir).instance(instance_id)
    assert info.value.error_id is ErrorId.ErrRecord
    proc = run_cli(base_dir, "remove", instance_id)
    assert proc.returncode == 0, text(proc.stderr)
    assert "Traceback" not in text(proc.stderr)
    assert tree_checksum(victim) == before
    assert sorted(os.listdir(base_dir)) == [".rootfs"]


def test_gc_and_remove_refuse_a_directory_rootfs_never_used(scratch: Scratch) -> None:
    """gc and remove once deleted any 12-hex-named directory of any
    directory they were pointed at."""
    elsewhere = scratch("not-a-base-")
    os.chmod(elsewhere, 0o700)
    os.makedirs(os.path.join(elsewhere, "0123456789ab", "root", "data"))
    before = tree_checksum(elsewhere)
    for args in (["gc"], ["gc", "--dry-run"], ["remove", "0123456789ab"], ["list"]):
        proc = run_cli(elsewhere, *args)
        if args == ["list"]:
            assert proc.returncode == 0 and proc.stdout == b""
        else:
            assert "ErrNotBaseDir" in assert_cli_error(proc, "ErrNotBaseDir")
    assert tree_checksum(elsewhere) == before


# ------------------------------------------------------------------ 3. shared base directories
@pytest.mark.parametrize("mode", [0o1777, 0o775, 0o757])
def test_a_base_dir_others_can_write_is_refused(scratch: Scratch, prototype: str, mode: int) -> None:
    shared = scratch("shared-")
    os.chmod(shared, mode)
    for args in (["generate", prototype], ["list"], ["gc"]):
        assert_cli_error(run_cli(shared, *args), "ErrRwBaseDirUnsafe")
    assert os.listdir(shared) == []


def test_root_listing_a_users_base_dir_is_refused_and_writes_nothing(scratch: Scratch) -> None:
    """Root ran ``rootfs --base-dir <a user's dir> list``: it left a
    root-owned 0700 state dir that broke the user's own commands."""
    user = pwd.getpwnam("nobody")
    mine = scratch("users-")
    os.chown(mine, user.pw_uid, user.pw_gid)
    os.chmod(mine, 0o700)
    for args in (["list"], ["gc"], ["remove", "0" * 12]):
        assert_cli_error(run_cli(mine, *args), "ErrRwBaseDirUnsafe")
    assert os.listdir(mine) == []  # the user's own commands find their directory as they left it


# ------------------------------------------------------------------ 7. refused commands write nothing
def test_a_refused_generate_writes_nothing_into_the_prototype(make_prototype: Callable[..., str]) -> None:
    """``rootfs --base-dir PROTO/var generate PROTO`` was refused but left
    ``.rootfs`` in the prototype."""
    prototype = make_prototype(lambda p: os.chmod(os.path.join(p, "var"), 0o700))
    base = os.path.join(prototype, "var")
    before = tree_checksum(prototype)
    assert_cli_error(run_cli(base, "generate", prototype), "ErrPrototypeOverlapsBase")
    assert tree_checksum(prototype) == before
    assert not os.path.lexists(os.path.join(base, ".rootfs"))


# ------------------------------------------------------------------ 6. aliases
def test_a_base_dir_that_is_a_bind_of_a_directory_inside_the_prototype_is_refused(
    make_prototype: Callable[..., str], scratch: Scratch, leak_guard: None
) -> None:
    """The overlap check compared path strings, so a base directory bound
    from inside the prototype passed it, and the prototype was modified."""
    prototype = make_prototype(lambda p: os.chmod(os.path.join(p, "home"), 0o700))
    alias = scratch("alias-")
    inside = os.path.join(prototype, "home")
    before = tree_checksum(prototype)
    LinuxSyscalls().mount(inside, alias, "", MS_BIND, "")
    try:
        with pytest.raises(RootFSError) as info:
            RootFS(alias).generate(prototype)
        assert info.value.error_id is ErrorId.ErrPrototypeOverlapsBase
        reverse = scratch("reverse-")  # and the other way round: the prototype bound from the base
        os.chmod(reverse, 0o700)
        os.mkdir(os.path.join(reverse, "proto"))
        second = scratch("proto-alias-")
        LinuxSyscalls().mount(os.path.join(reverse, "proto"), second, "", MS_BIND, "")
        try:
            with pytest.raises(RootFSError) as info:
                RootFS(reverse).generate(second)
            assert info.value.error_id is ErrorId.ErrPrototypeOverlapsBase
        finally:
            LinuxSyscalls().umount(second, UMOUNT_NOFOLLOW)
    finally:
        LinuxSyscalls().umount(alias, UMOUNT_NOFOLLOW)
    assert tree_checksum(prototype) == before


# ------------------------------------------------------------------ 5. honest states
def test_a_second_failed_remove_does_not_make_the_instance_ready(base_dir: str, prototype: str) -> None:
    """After a remove that could not finish, a second failed one marked the
    instance ready again."""
    require_backends(base_dir, "quilt")
    root = RootFS(base_dir, backend="quilt").generate(prototype)
    for attempt in (1, 2):
        faulty = FaultySyscalls()
        # the first unmount goes through, the second fails: a removal began
        faulty.fail_on = {2} if attempt == 1 else {1}
        with pytest.raises(RootFSError):
            RootFS(base_dir, syscalls=faulty, sweep=False).remove(root)
        (instance,) = RootFS(base_dir, sweep=False).instances()
        assert instance.state == "removing", attempt
    assert RootFS(base_dir).remove(root, missing_ok=True) is True


def test_a_busy_refusal_leaves_a_ready_instance_ready(base_dir: str, prototype: str) -> None:
    require_backends(base_dir, "overlayfs")
    rfs = RootFS(base_dir, backend="overlayfs")
    root = rfs.generate(prototype)
    holder = subprocess.Popen(["sleep", "60"], cwd=root)
    try:
        for _ in range(2):
            with pytest.raises(RootFSError) as info:
                rfs.remove(root)
            assert info.value.error_id is ErrorId.ErrRootBusy
            assert [i.state for i in rfs.instances()] == ["ready"]
    finally:
        holder.kill()
        holder.wait()
    rfs.remove(root)


def test_after_a_reboot_an_instance_is_listed_unmounted(base_dir: str, prototype: str) -> None:
    require_backends(base_dir, "quilt")
    rfs = RootFS(base_dir, backend="quilt")
    root = rfs.generate(prototype)
    for point in sorted(instance_mounts(base_dir), key=len, reverse=True):  # the reboot
        LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)
    assert [i.state for i in rfs.instances()] == ["unmounted"]
    listed = json.loads(run_cli(base_dir, "list", "--json").stdout)
    assert [row["state"] for row in listed] == ["unmounted"]
    assert rfs.remove(root) is True


def test_a_damaged_record_does_not_skip_the_busy_check(base_dir: str, prototype: str) -> None:
    """A busy quilt root whose record was cut short lost var, tmp, ... before
    ErrRootBusy: the damaged-record path now checks busy first."""
    require_backends(base_dir, "quilt")
    rfs = RootFS(base_dir, backend="quilt")
    root = rfs.generate(prototype)
    with open(os.path.join(root, "var", "written"), "w") as fh:
        fh.write("kept\n")
    instance_id = os.path.basename(os.path.dirname(root))
    with open(Store(base_dir).record_path(instance_id), "r+") as fh:
        fh.truncate(20)
    before = instance_mounts(base_dir)
    holder = subprocess.Popen(["sleep", "60"], cwd=os.path.join(root, "tmp"))
    try:
        with pytest.raises(RootFSError) as info:
            rfs.remove(root)
        assert info.value.error_id is ErrorId.ErrRootBusy
        assert instance_mounts(base_dir) == before
        with open(os.path.join(root, "var", "written")) as fh:
            assert fh.read() == "kept\n"
    finally:
        holder.kill()
        holder.wait()
    assert rfs.remove(root) is True


# ------------------------------------------------------------------ 9. helpers die with their parent
def test_a_killed_generate_leaves_no_copier_and_gc_never_races_it(
    base_dir: str, make_prototype: Callable[..., str]
) -> None:
    """SIGKILL a quilt generate while it copies: ``cp -a`` went on writing
    into the instance and gc failed with "Directory not empty" meanwhile.
    The copier dies with its parent, and holds the instance's lock until it
    is gone, so a gc right after the kill never meets a half-deleted tree."""
    require_backends(base_dir, "quilt")

    def big(path: str) -> None:
        for index in range(3000):
            with open(os.path.join(path, "var", f"f{index}"), "wb") as fh:
                fh.write(os.urandom(4096))

    prototype = make_prototype(big)
    code = (
        "import sys; from rootfs_core import RootFS; "
        f"RootFS({base_dir!r}, backend='quilt').generate({prototype!r}, dirs='var')"
    )
    child = subprocess.Popen([sys.executable, "-c", code], cwd="/")
    copier = None
    deadline = time.monotonic() + 30
    while copier is None and time.monotonic() < deadline:
        copier = next((pid for pid in _children(child.pid) if _comm(pid) == "cp"), None)
        time.sleep(0.005)
    assert copier is not None, "the copy never started"
    child.send_signal(signal.SIGKILL)
    child.wait()
    report = RootFS(base_dir, sweep=False).gc()  # right away: may have to leave it, never fail
    assert report.failed == {}, report
    deadline = time.monotonic() + 5
    while _comm(copier) == "cp" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _comm(copier) != "cp", "the copier outlived the generate it worked for"
    RootFS(base_dir, sweep=False).gc()
    assert RootFS(base_dir).instances() == []
    assert instance_mounts(base_dir) == []


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _comm(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return None


def test_the_mount_table_is_unchanged_by_a_refused_command(base_dir: str, prototype: str) -> None:
    before = mount_points()
    assert_cli_error(run_cli(base_dir, "remove", "/etc"), "ErrNotOurRoot")
    assert_cli_error(run_cli(base_dir, "remove", "0" * 12), "ErrNoSuchRoot")
    assert mount_points() == before
