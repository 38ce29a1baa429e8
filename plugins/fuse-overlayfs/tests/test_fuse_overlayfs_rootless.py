"""The point of this backend: an unprivileged user with a base directory of
their own generates and removes roots with the ``rootfs`` command, and gets
fuse-overlayfs without asking because the kernel overlay and the quilt cannot
mount for them.

The setup runs as root: it creates the system user ``rootfs-rootless``, builds
one virtualenv per session from Debian's ``/usr/bin/python3`` (the default
python3 lives under /root, which that user cannot enter) with rootfs-core and
the in-tree backends installed from this source tree in one pip call, and
hands the user a base directory and a prototype. Everything the user runs
goes through ``runuser`` with a clean environment.

Where ``/dev/fuse`` is closed to other users (mode 0600, as on hosts without
udev), nobody but root can mount FUSE, not even through the set-uid
fusermount3. A test that needs it grants the user read-write access with an
ACL entry for the length of that test only, then restores the device exactly.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts, mount_options, tree_checksum
from rootfs_core.testing.fixtures import remove_scratch, scratch_dir
from rootfs_core.testing.prototypes import make_tiny_prototype

USER = "rootfs-rootless"
SYSTEM_PYTHON = "/usr/bin/python3"
FUSE_DEVICE = "/dev/fuse"
PLUGIN_DIR = Path(__file__).resolve().parents[1]
REPO = PLUGIN_DIR.parents[1]
# rootfs-core, the backends an unprivileged user must see fail, and this one.
DISTRIBUTIONS = [REPO, REPO / "plugins/overlayfs", REPO / "plugins/quilt", PLUGIN_DIR]
# The POSIX ACL xattr format (linux/posix_acl_xattr.h): a version, then
# (tag, permissions, id) entries sorted by tag.
_ACL_XATTR = "system.posix_acl_access"
_ACL_VERSION = 2
_ACL_USER_OBJ, _ACL_USER, _ACL_GROUP_OBJ, _ACL_MASK, _ACL_OTHER = 0x01, 0x02, 0x04, 0x10, 0x20
_ACL_UNDEFINED_ID = 0xFFFFFFFF


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create the unprivileged user and hand it a base directory"
    for program in ("fuse-overlayfs", "fusermount3", "runuser", "useradd"):
        if shutil.which(program) is None:
            return f"{program} is not installed (apt-get install fuse-overlayfs fuse3 util-linux passwd)"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing: the unprivileged user's virtualenv is made from it"
    if not all((path / "pyproject.toml").is_file() for path in DISTRIBUTIONS):
        return f"not run from a rootfs source tree ({REPO}): the user's virtualenv is installed from it"
    return None


pytestmark = pytest.mark.skipif(_why_not() is not None, reason=str(_why_not()))

Daemons = Callable[[str], list[str]]


@pytest.fixture(scope="session")
def user() -> pwd.struct_passwd:
    """The unprivileged user, created once for good (a system user without a password)."""
    try:
        return pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--create-home", USER], check=True)
        return pwd.getpwnam(USER)


def _open_to_others(path: str) -> str | None:
    """Why the user cannot reach ``path``, or None: every directory above it
    must let others through."""
    parent = os.path.dirname(path)
    while parent != "/":
        if not os.stat(parent).st_mode & 0o001:
            return f"{parent} is closed to other users"
        parent = os.path.dirname(parent)
    return None


def _holder(prefix: str) -> str:
    """A scratch directory the user can traverse (mkdtemp makes them 0700)."""
    holder = scratch_dir(prefix)
    os.chmod(holder, 0o755)
    blocked = _open_to_others(os.path.join(holder, "x"))
    if blocked is not None:
        remove_scratch(holder)
        pytest.skip(f"the test user cannot reach the scratch directory: {blocked}")
    return holder


@pytest.fixture(scope="session")
def rootfs_command(user: pwd.struct_passwd) -> Iterator[str]:
    """``rootfs`` of a virtualenv the user can run, installed once per session
    from this source tree (one pip call, so pip never asks an index for
    rootfs-core)."""
    holder = _holder("rootless-venv-")
    venv = os.path.join(holder, "venv")
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", venv], check=True)
    subprocess.run(
        [
            f"{venv}/bin/python",
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *map(str, DISTRIBUTIONS),
        ],
        check=True,
    )
    yield f"{venv}/bin/rootfs"
    remove_scratch(holder)


def as_user(user: pwd.struct_passwd, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as the user with a clean environment: no probe cache, no
    configuration file, nothing of root's."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        "HOME": user.pw_dir,
        "LANG": "C.UTF-8",
        "ROOTFS_CONFIG": "/nonexistent/rootfs.toml",
        "ROOTFS_CACHE": "",
    }
    return subprocess.run(
        ["runuser", "-u", USER, "--", "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _user_can_open_fuse(user: pwd.struct_passwd) -> bool:
    return as_user(user, "test", "-r", FUSE_DEVICE, "-a", "-w", FUSE_DEVICE).returncode == 0


def _acl(mode: int, uid: int) -> bytes:
    """An access ACL keeping ``mode`` for owner, group and others, plus read
    and write for ``uid``."""

    def entry(tag: int, perm: int, qualifier: int = _ACL_UNDEFINED_ID) -> bytes:
        return struct.pack("<HHI", tag, perm, qualifier)

    return struct.pack("<I", _ACL_VERSION) + b"".join(
        [
            entry(_ACL_USER_OBJ, (mode >> 6) & 7),
            entry(_ACL_USER, 6, uid),
            entry(_ACL_GROUP_OBJ, (mode >> 3) & 7),
            entry(_ACL_MASK, 6 | ((mode >> 3) & 7)),
            entry(_ACL_OTHER, mode & 7),
        ]
    )


@pytest.fixture
def fuse_access(user: pwd.struct_passwd) -> Iterator[None]:
    """Let the user open /dev/fuse for this test (the udev default on most
    hosts), by an ACL entry for that user alone, then restore the device."""
    if _user_can_open_fuse(user):
        yield
        return
    st = os.stat(FUSE_DEVICE)
    try:
        saved: bytes | None = os.getxattr(FUSE_DEVICE, _ACL_XATTR)
    except OSError:
        saved = None
    try:
        os.setxattr(FUSE_DEVICE, _ACL_XATTR, _acl(st.st_mode & 0o777, user.pw_uid))
    except OSError as exc:
        pytest.skip(f"cannot give {USER} access to {FUSE_DEVICE} with an ACL: {exc}")
    try:
        yield
    finally:
        if saved is None:
            os.removexattr(FUSE_DEVICE, _ACL_XATTR)
        else:
            os.setxattr(FUSE_DEVICE, _ACL_XATTR, saved)
        os.chmod(FUSE_DEVICE, st.st_mode & 0o7777)


@pytest.fixture
def place(
    user: pwd.struct_passwd, rootfs_command: str, leak_guard: None, daemons: Daemons
) -> Iterator[tuple[str, str]]:
    """(base dir, prototype), both the user's. At teardown no mount may be
    left in the base dir, no daemon may serve it, no fuse-overlayfs instance
    may be left and the prototype is unchanged; a mount a failed test leaves
    is unmounted (root may) before anything is deleted."""
    holder = _holder("rootless-")
    base = os.path.join(holder, "base")
    os.mkdir(base, 0o755)
    proto = make_tiny_prototype(os.path.join(holder, "prototype"))
    for top in (base, proto):
        os.lchown(top, user.pw_uid, user.pw_gid)
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), user.pw_uid, user.pw_gid)
    before = tree_checksum(proto)
    yield base, proto
    try:
        assert instance_mounts(base) == [], "mounts left in the base dir"
        assert daemons(base) == [], "fuse-overlayfs processes left"
        left = [
            i["root"] for i in rootfs(user, rootfs_command, base, "list") if i["backend"] == "fuse-overlayfs"
        ]
        assert left == [], "fuse-overlayfs instances left"
        assert tree_checksum(proto) == before, "the prototype was modified"
    finally:
        for point in sorted(instance_mounts(base), key=len, reverse=True):
            subprocess.run(["fusermount3", "-u", "--", point], check=False)
        remove_scratch(holder)


def rootfs(user: pwd.struct_passwd, command: str, base: str, *args: str) -> Any:
    """``rootfs --base-dir BASE ARGS... --json`` as the user, its JSON parsed."""
    proc = as_user(user, command, "--base-dir", base, *args, "--json")
    assert proc.returncode == 0, f"rootfs {' '.join(args)} failed: {proc.stderr}"
    return json.loads(proc.stdout)


@pytest.mark.usefixtures("fuse_access")
def test_an_unprivileged_user_gets_fuse_overlayfs(
    user: pwd.struct_passwd, rootfs_command: str, place: tuple[str, str]
) -> None:
    base, _ = place
    rows = rootfs(user, rootfs_command, base, "backends")
    status = {row["name"]: row for row in rows}
    assert status["fuse-overlayfs"]["supported"] and status["fuse-overlayfs"]["selected"]
    assert [row["name"] for row in rows if row["selected"]] == ["fuse-overlayfs"]
    overlay = status["overlayfs"]
    assert not overlay["supported"] and not overlay["selected"]
    assert "no privilege to mount" in overlay["reason"]  # the probe's own explanation of EPERM
    assert not status["quilt"]["supported"]


@pytest.mark.usefixtures("fuse_access")
def test_an_unprivileged_user_generates_writes_and_removes(
    user: pwd.struct_passwd, rootfs_command: str, place: tuple[str, str], daemons: Daemons
) -> None:
    base, proto = place
    made = rootfs(user, rootfs_command, base, "generate", proto)
    assert made["backend"] == "fuse-overlayfs"
    root = made["root"]
    assert instance_mounts(base) == [root]
    [daemon] = daemons(root)
    assert f"squash_to_uid={user.pw_uid}" in daemon
    script = (
        f"set -e; cd {root}; echo written > etc/new; echo changed > etc/hostname; rm etc/passwd; "
        "mkdir var/cache; cat etc/deep/er/file etc/new etc/hostname; ls etc"
    )
    proc = as_user(user, "sh", "-c", script)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["deep", "written", "changed", "deep", "hostname", "hostname.link", "new"]
    removed = rootfs(user, rootfs_command, base, "remove", root)
    assert removed["removed"] == root
    assert instance_mounts(base) == [] and daemons(base) == []
    assert not os.path.exists(os.path.dirname(root))
    # the place fixture checks the prototype, bit for bit


@pytest.mark.usefixtures("fuse_access")
def test_a_prototype_owned_by_root_is_writable_for_the_user(
    user: pwd.struct_passwd, rootfs_command: str, place: tuple[str, str]
) -> None:
    """Without privilege a copy-up cannot keep a file's owner, so the backend
    squashes every owner to the user's: root's files are theirs to change."""
    base, _ = place
    holder = _holder("rootless-rootproto-")
    try:
        proto = make_tiny_prototype(os.path.join(holder, "prototype"))
        before = tree_checksum(proto)
        root = rootfs(user, rootfs_command, base, "generate", proto)["root"]
        proc = as_user(user, "sh", "-c", f"echo mine > {root}/etc/hostname && stat -c %U {root}/etc/passwd")
        assert (proc.returncode, proc.stdout.strip()) == (0, USER), proc.stderr
        rootfs(user, rootfs_command, base, "remove", root)
        assert tree_checksum(proto) == before
    finally:
        remove_scratch(holder)


@pytest.mark.usefixtures("fuse_access")
def test_the_protections_of_the_prototype_mount_reach_fusermount3(
    user: pwd.struct_passwd, rootfs_command: str, place: tuple[str, str]
) -> None:
    """Without privilege fusermount3 mounts, and makes every mount nosuid and
    nodev by itself, but not noexec: a prototype on a noexec mount gives a
    noexec root only because the backend passes it on (fusermount3 accepts
    the three words from any user)."""
    base, _ = place
    holder = _holder("rootless-noexec-")
    point = os.path.join(holder, "mnt")
    os.mkdir(point)
    LinuxSyscalls().mount("tmpfs", point, "tmpfs", os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC, "mode=0755")
    try:
        proto = make_tiny_prototype(os.path.join(point, "prototype"))
        true = shutil.which("true")
        assert true is not None
        shutil.copy(true, os.path.join(proto, "usr/bin/true"))
        root = rootfs(user, rootfs_command, base, "generate", proto)["root"]
        try:
            assert {"nosuid", "nodev", "noexec"} <= mount_options(root)
            proc = as_user(user, f"{root}/usr/bin/true")
            assert proc.returncode == 126 and "Permission denied" in proc.stderr, proc
        finally:
            rootfs(user, rootfs_command, base, "remove", root)
    finally:
        LinuxSyscalls().umount(point, UMOUNT_NOFOLLOW)
        remove_scratch(holder)


def test_without_access_to_dev_fuse_the_probe_says_why(
    user: pwd.struct_passwd, rootfs_command: str, place: tuple[str, str]
) -> None:
    if _user_can_open_fuse(user):
        pytest.skip(f"{FUSE_DEVICE} is open to {USER} on this host")
    base, proto = place
    rows = rootfs(user, rootfs_command, base, "backends")
    [fuse] = [row for row in rows if row["name"] == "fuse-overlayfs"]
    assert not fuse["supported"]
    assert FUSE_DEVICE in fuse["reason"] and "chmod 0666" in fuse["reason"]
    proc = as_user(user, rootfs_command, "--base-dir", base, "generate", proto)
    assert proc.returncode == 1
    assert "ErrNoSupportedBackend" in proc.stderr and FUSE_DEVICE in proc.stderr


@pytest.mark.usefixtures("fuse_access")
def test_the_failed_probes_of_other_backends_leave_nothing(
    user: pwd.struct_passwd, rootfs_command: str, place: tuple[str, str]
) -> None:
    base, _ = place
    status = {row["name"]: row for row in rootfs(user, rootfs_command, base, "backends")}
    assert "no privilege to mount" in status["overlayfs"]["reason"]
    assert rootfs(user, rootfs_command, base, "list") == []
    assert sorted(os.listdir(base)) == [".rootfs"]


@pytest.mark.usefixtures("fuse_access")
def test_an_unprivileged_user_is_refused_a_stack_but_gets_a_view(
    user: pwd.struct_passwd, rootfs_command: str, place: tuple[str, str]
) -> None:
    """Without privilege the daemon cannot read ``trusted.overlay.opaque``
    (the kernel hides ``trusted.*`` from it), so a stack would show what its
    opaque directories hide: it is refused, with the reason, and nothing is
    left. A read-only view of the prototype alone works."""
    base, proto = place
    holder = _holder("rootless-layer-")
    try:
        layer = os.path.join(holder, "layer")
        os.makedirs(os.path.join(layer, "etc"))
        with open(os.path.join(layer, "etc", "top"), "wb") as fh:
            fh.write(b"top\n")
        proc = as_user(user, rootfs_command, "--base-dir", base, "generate", proto, layer)
        assert proc.returncode == 1, proc
        assert "ErrUnsupportedRequest" in proc.stderr and "trusted.overlay.opaque" in proc.stderr
        assert instance_mounts(base) == [] and rootfs(user, rootfs_command, base, "list") == []
        assert sorted(os.listdir(base)) == [".rootfs"]
        view = rootfs(user, rootfs_command, base, "generate", proto, "--read-only")
        assert view["backend"] == "fuse-overlayfs" and view["read_only"] is True
        proc = as_user(user, "sh", "-c", f"cat {view['root']}/etc/hostname; touch {view['root']}/tmp/new")
        assert proc.stdout == "prototype\n" and "Read-only file system" in proc.stderr, proc
        rootfs(user, rootfs_command, base, "remove", view["root"])
    finally:
        remove_scratch(holder)
