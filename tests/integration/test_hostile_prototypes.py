"""Hostile and odd input, each with a clear outcome (the right result, or a
clear error id) and the host untouched: prototypes that are not usable
directories, odd path names (prototype and base directory), symlinks that
try to lead mounts out of the root at every mount target of every backend,
every kind of file, sparse, large and deep trees, a prototype with a mount
inside it, and a prototype that changes while its instances exist.

(An unreadable prototype cannot be tested as root, which reads everything.)
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator

import pytest
from integration_support import (
    HOSTNAME,
    assert_cli_error,
    assert_works,
    generate_json,
    list_json,
    require_backends,
    run_cli,
    text,
)

from rootfs_core import ErrorId, RootFS, RootFSError, paths
from rootfs_core.syscalls import UMOUNT_NOFOLLOW, LinuxSyscalls
from rootfs_core.testing.checks import instance_mounts, mount_points, tree_checksum
from rootfs_core.testing.faults import FakeMounts
from rootfs_core.testing.fixtures import assert_base_dir_clean, remove_scratch, scratch_dir
from rootfs_core.testing.prototypes import SEED_DIRS, make_tiny_prototype

MakePrototype = Callable[..., str]
Scratch = Callable[[str], str]
GiB = 1 << 30
DEPTH = 200

# ----------------------------------------------------------------- not a usable prototype
BAD_PROTOTYPES = {
    "missing": "ErrPrototypeMissing",
    "a file": "ErrPrototypeNotDir",
    "a fifo": "ErrPrototypeNotDir",
    "a device node": "ErrPrototypeNotDir",
    "a dangling symlink": "ErrPrototypeMissing",
    "a symlink loop": "ErrPrototypeMissing",
    "the base dir": "ErrPrototypeOverlapsBase",
    "inside the base dir": "ErrPrototypeOverlapsBase",
    "the state dir": "ErrPrototypeOverlapsBase",
    "containing the base dir": "ErrPrototypeOverlapsBase",
    "the host root": "ErrPrototypeOverlapsBase",
    "a symlink to the base dir": "ErrPrototypeOverlapsBase",
}


def _bad_prototype(case: str, prototype: str, base: str, scratch: Scratch) -> str:
    links = scratch("links-")
    if case == "missing":
        return os.path.join(prototype, "absent")
    if case == "a file":
        return os.path.join(prototype, "etc/hostname")
    if case == "a fifo":
        return os.path.join(prototype, "dev/fifo")
    if case == "a device node":
        return "/dev/null"
    if case == "a dangling symlink":
        os.symlink("/nonexistent/rootfs-test", os.path.join(links, "link"))
    elif case == "a symlink loop":
        os.symlink("link", os.path.join(links, "link"))
    elif case == "a symlink to the base dir":
        os.symlink(base, os.path.join(links, "link"))
    elif case == "the base dir":
        return base
    elif case == "inside the base dir":
        return make_tiny_prototype(os.path.join(base, "inside"))
    elif case == "the state dir":
        return os.path.join(base, ".rootfs")
    elif case == "containing the base dir":
        return os.path.dirname(base)
    elif case == "the host root":
        return "/"
    return os.path.join(links, "link")


@pytest.mark.parametrize("case", list(BAD_PROTOTYPES))
def test_an_unusable_prototype_is_refused_with_its_error_id(
    base_dir: str, backend: str, prototype: str, scratch: Scratch, case: str
) -> None:
    """``rootfs generate`` of a prototype that is missing, not a directory,
    or overlaps the base directory: exit 1 with the documented error id,
    nothing made, the mount table unchanged."""
    bad = _bad_prototype(case, prototype, base_dir, scratch)
    before = mount_points()
    proc = run_cli(base_dir, "--backend", backend, "generate", bad)
    assert_cli_error(proc, BAD_PROTOTYPES[case])
    assert mount_points() == before
    if case == "inside the base dir":
        LinuxSyscalls().remove_tree(bad)  # ours, just made, nothing mounted in it
    assert_base_dir_clean(base_dir)


# ----------------------------------------------------------------- odd names
ODD_NAMES = {
    "space": b"with space",
    "newline": b"new\nline",
    "tab": b"tab\there",
    "non-utf8": b"bad-\xff\xfe-bytes",
    "overlay separators": b"a,b:c=d",
    "backslash": b"back\\slash\\,",
    "quotes and shell": b'it\'s "$HOME";`id`',
    "leading dash": b"-rf",
    "unicode": "donn\u00e9es-\u2713".encode(),
    "255 bytes": b"x" * 255,
}


@pytest.mark.parametrize("name", list(ODD_NAMES))
def test_prototype_path_with_odd_characters(
    base_dir: str, backend: str, make_prototype: MakePrototype, name: str
) -> None:
    """A prototype named with spaces, newlines, tabs, bytes that are not
    UTF-8, the overlay's option separators, shell metacharacters, a leading
    dash or 255 bytes: generate works (never a traceback; were it to fail,
    with an error id and nothing left), the record names the prototype
    exactly, ``list`` shows it, and remove leaves nothing."""
    prototype = make_prototype(name=os.fsdecode(ODD_NAMES[name]))
    proc = run_cli(base_dir, "--backend", backend, "generate", os.fsencode(prototype), "--json")
    if proc.returncode != 0:
        assert_cli_error(proc)
        assert_base_dir_clean(base_dir)
    assert proc.returncode == 0, f"{backend} fails (clearly) on {name!r}: {text(proc.stderr)}"
    data = json.loads(proc.stdout)
    assert data["prototype"] == prototype
    assert_works(data["root"])
    assert [r["prototype"] for r in list_json(base_dir)] == [prototype]
    listed = run_cli(base_dir, "list")  # the text form prints the path as it is
    assert listed.returncode == 0 and os.fsencode(prototype) in listed.stdout, text(listed.stderr)
    assert run_cli(base_dir, "remove", data["id"]).returncode == 0
    assert_base_dir_clean(base_dir)


def test_list_prints_a_non_utf8_prototype_in_a_strict_utf8_locale(
    base_dir: str, make_prototype: MakePrototype
) -> None:
    """``rootfs list`` under a strict UTF-8 stdout prints a prototype path
    that is not UTF-8 (as its bytes), without a traceback."""
    require_backends(base_dir, "quilt")
    prototype = make_prototype(name=os.fsdecode(ODD_NAMES["non-utf8"]))
    root = RootFS(base_dir, backend="quilt").generate(prototype)
    try:
        listed = run_cli(base_dir, "list", env={"PYTHONIOENCODING": "utf-8"})
        assert "Traceback" not in text(listed.stderr), text(listed.stderr)
        assert listed.returncode == 0 and os.fsencode(prototype) in listed.stdout
    finally:
        RootFS(base_dir).remove(root)


@pytest.mark.parametrize("name", ["space", "newline", "non-utf8", "overlay separators", "backslash"])
def test_base_dir_path_with_odd_characters(
    backend: str, prototype: str, scratch: Scratch, leak_guard: None, name: str
) -> None:
    """A base directory whose path has spaces, newlines, bytes that are not
    UTF-8, the overlay's separators or backslashes: the backend's probe,
    generate, list and remove all work, and nothing is left."""
    base = os.path.join(scratch("odd-base-"), os.fsdecode(ODD_NAMES[name]))
    os.mkdir(base)
    proc = run_cli(os.fsencode(base), "--backend", backend, "generate", prototype, "--json")
    assert proc.returncode == 0, text(proc.stderr)
    root = json.loads(proc.stdout)["root"]
    assert os.path.dirname(os.path.dirname(root)) == base
    assert_works(root)
    assert run_cli(os.fsencode(base), "remove", os.fsencode(root)).returncode == 0
    assert_base_dir_clean(base)


# ----------------------------------------------------------------- symlinks out of the root
def _replace_with_link(path: str, relative: str, target: str) -> None:
    full = os.path.join(path, relative)
    LinuxSyscalls().remove_tree(full)  # freshly built here, nothing mounted in it
    os.symlink(target, full)


LINK_FORMS = {
    "absolute": "/usr/lib",  # the host's /usr/lib, were it followed outside the root
    "climbing": "../../../../../../../../../usr/lib",
    "host only": "/nonexistent-on-purpose",  # exists nowhere in the root
}


@pytest.mark.parametrize("form", list(LINK_FORMS))
@pytest.mark.parametrize("directory", SEED_DIRS)
def test_quilt_symlinks_at_each_mount_target_stay_in_the_root(
    base_dir: str, make_prototype: MakePrototype, leak_guard: None, directory: str, form: str
) -> None:
    """Each of the quilt's seven mount targets in turn is a symlink leading
    out of the root (absolute, or climbing with ``..``): the writable copy
    lands on the root's own ``usr/lib``, never the host's; every new mount
    is inside the root; a file written there reaches neither the host nor
    the prototype. A link to what exists only on the host fails with
    ``ErrRootSubdirMissing`` and leaves nothing."""
    require_backends(base_dir, "quilt")
    prototype = make_prototype(lambda p: _replace_with_link(p, directory, LINK_FORMS[form]))
    rfs = RootFS(base_dir, backend="quilt")
    before = set(mount_points())
    if form == "host only":
        with pytest.raises(RootFSError) as info:
            rfs.generate(prototype)
        assert info.value.error_id is ErrorId.ErrRootSubdirMissing
        assert set(mount_points()) == before
        assert_base_dir_clean(base_dir)
        return
    marker = f"rootfs-escape-test-{os.getpid()}"
    with rfs.generated(prototype) as root:
        new = set(mount_points()) - before
        assert new and all(p == root or p.startswith(root + "/") for p in new), new
        assert os.path.join(root, "usr/lib") in new
        assert os.readlink(os.path.join(root, directory)) == LINK_FORMS[form]
        with open(os.path.join(root, "usr/lib", marker), "w") as fh:
            fh.write("inside\n")
        assert not os.path.lexists(os.path.join("/usr/lib", marker))
        assert not os.path.lexists(os.path.join(prototype, "usr/lib", marker))
    assert set(mount_points()) == before


HOSTILE_LINKS = {
    "proc": "/proc",
    "dev": "../../../../../dev",
    "etc": "../../../../../../usr/lib",
    "home": "/",
    "sbin": "/usr/sbin-nonexistent",
    "var": "/usr/lib",
    "tmp": "/tmp",  # resolves to itself in the root: a loop
}


def _all_links_hostile(path: str) -> None:
    for directory, target in HOSTILE_LINKS.items():
        _replace_with_link(path, directory, target)


def test_overlay_mounts_only_the_root_whatever_the_symlinks(
    base_dir: str, make_prototype: MakePrototype, leak_guard: None
) -> None:
    """overlayfs has one mount target, the root, made by rootfs: with every
    seed directory of the prototype an escaping symlink, generate mounts
    exactly one thing, the links show in the root as they are, and a write
    through them (resolved as inside a container) lands in the root, never
    on the host."""
    require_backends(base_dir, "overlayfs")
    prototype = make_prototype(_all_links_hostile)
    before = set(mount_points())
    rfs = RootFS(base_dir, backend="overlayfs")
    marker = f"rootfs-escape-test-{os.getpid()}"
    with rfs.generated(prototype) as root:
        assert set(mount_points()) - before == {root}
        for directory, target in HOSTILE_LINKS.items():
            assert os.readlink(os.path.join(root, directory)) == target
        inside = paths.resolve_in_root(root, "var")
        assert inside == os.path.join(root, "usr/lib")
        with open(os.path.join(inside, marker), "w") as fh:
            fh.write("inside\n")
        assert not os.path.lexists(os.path.join("/usr/lib", marker))
        assert not os.path.lexists(os.path.join(prototype, "usr/lib", marker))
    assert set(mount_points()) == before


def test_aufs_mounts_only_inside_the_instance_whatever_the_symlinks(
    base_dir: str, make_prototype: MakePrototype, pretend_aufs: None
) -> None:
    """aufs (simulated: this kernel has none) with every seed directory an
    escaping symlink: every mount it asks for targets the instance's own
    root, through no symlink; remove takes it all back."""
    prototype = make_prototype(_all_links_hostile)
    fake = FakeMounts()
    rfs = RootFS(base_dir, backend="aufs", syscalls=fake)
    rfs.selected_backend()
    fake.mount_calls.clear()
    root = rfs.generate(prototype)
    targets = [call[1] for call in fake.mount_calls]
    assert targets == [root], fake.mount_calls
    assert paths.has_no_symlink(root)
    rfs.remove(root)
    assert fake.mounted == [] and rfs.instances() == []


def test_a_symlink_to_the_prototype_is_resolved_once(
    base_dir: str, backend: str, prototype: str, scratch: Scratch
) -> None:
    """A prototype given through a symlink is resolved before anything is
    mounted, and the record names the real directory (re-pointing the link
    later changes nothing for the instance)."""
    link = os.path.join(scratch("link-"), "current")
    os.symlink(prototype, link)
    data = generate_json(base_dir, backend, link)
    assert data["prototype"] == prototype
    os.unlink(link)
    os.symlink("/etc", link)
    assert_works(data["root"])
    assert run_cli(base_dir, "remove", data["root"]).returncode == 0


# ----------------------------------------------------------------- every kind of file
def _deep(top: str) -> str:
    return os.path.join(top, *(f"d{n:03d}" for n in range(DEPTH)))


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def special_prototype() -> Iterator[str]:
    """The tiny prototype (a device node, a fifo, a socket, a hardlink, a
    name that is not UTF-8) plus: 1 GiB sparse files in ``var`` (copied by
    the quilt) and ``usr`` (read-only there), 32 MiB of real data, a
    hardlink across directories, and trees 200 directories deep in ``etc``
    and ``usr``. Built once; must be unchanged at the end."""
    holder = scratch_dir("special-")
    path = make_tiny_prototype(os.path.join(holder, "prototype"))
    for relative in ("var/sparse", "usr/sparse"):
        with open(os.path.join(path, relative), "wb") as fh:
            fh.truncate(GiB)
            fh.seek(GiB - 5)
            fh.write(b"tail\n")
    with open(os.path.join(path, "var/large"), "wb") as fh:
        for _ in range(32):
            fh.write(os.urandom(1 << 20))
    os.link(os.path.join(path, "etc/hostname"), os.path.join(path, "var/hostname.hard"))
    for top in ("etc/tree", "usr/tree"):
        os.makedirs(_deep(os.path.join(path, top)))
        with open(os.path.join(_deep(os.path.join(path, top)), "leaf"), "w") as fh:
            fh.write("deep\n")
    checksum = tree_checksum(path)
    yield path
    try:
        assert tree_checksum(path) == checksum, "the special prototype was modified"
    finally:
        remove_scratch(holder)


def _writable_copy(root: str, backend: str, relative: str) -> str:
    """Where a written file of the root lives in the instance's writable layer."""
    instance_dir = os.path.dirname(root)
    if backend == "overlayfs":
        return os.path.join(instance_dir, "upper", relative)
    top, rest = relative.split("/", 1)
    (copy,) = [n for n in os.listdir(os.path.join(instance_dir, "rw")) if n.endswith("-" + top)]
    return os.path.join(instance_dir, "rw", copy, rest)


def test_special_sparse_large_and_deep_files(base_dir: str, backend: str, special_prototype: str) -> None:
    """Through the root: the device node keeps its numbers, the fifo and the
    socket their types, a hardlink stays one file within a directory; a
    1 GiB sparse file reads right and, written to, stays sparse in the
    writable layer (no 1 GiB copy); 32 MiB read back identical; a file 200
    directories deep reads, and one can be written beside it; remove then
    deletes the deep copies and leaves nothing."""
    proto = special_prototype
    rfs = RootFS(base_dir, backend=backend)
    root = rfs.generate(proto)
    try:
        null = os.lstat(os.path.join(root, "dev/null"))
        assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
        assert stat.S_ISFIFO(os.lstat(os.path.join(root, "dev/fifo")).st_mode)
        assert stat.S_ISSOCK(os.lstat(os.path.join(root, "var/sock")).st_mode)
        one, other = (
            os.stat(os.path.join(root, "etc/hostname")),
            os.stat(os.path.join(root, "etc/hostname.link")),
        )
        assert (one.st_ino, one.st_dev) == (other.st_ino, other.st_dev) and one.st_nlink >= 2
        with open(os.path.join(root, "var/hostname.hard"), "rb") as fh:
            assert fh.read() == HOSTNAME
        for relative in ("var/sparse", "usr/sparse"):
            assert os.stat(os.path.join(root, relative)).st_size == GiB
            with open(os.path.join(root, relative), "rb") as fh:
                fh.seek(GiB - 5)
                assert fh.read() == b"tail\n"
        with open(os.path.join(root, "var/sparse"), "r+b") as fh:
            fh.write(b"head")
        layer = os.stat(_writable_copy(root, backend, "var/sparse"))
        assert layer.st_size == GiB and layer.st_blocks * 512 < 64 << 20, layer
        assert _sha256(os.path.join(root, "var/large")) == _sha256(os.path.join(proto, "var/large"))
        for top in ("etc/tree", "usr/tree"):
            with open(os.path.join(_deep(os.path.join(root, top)), "leaf")) as fh:
                assert fh.read() == "deep\n"
        with open(os.path.join(_deep(os.path.join(root, "etc/tree")), "new"), "w") as fh:
            fh.write("written at depth 200\n")
        assert_works(root)
    finally:
        rfs.remove(root)
    assert_base_dir_clean(base_dir)


def test_hardlinks_across_writable_directories(base_dir: str, backend: str, special_prototype: str) -> None:
    """A hardlink between ``etc`` and ``var``: overlay keeps one inode; the
    quilt copies each writable directory on its own, so there the two names
    are two files with the same content (documented in docs/reliability.md)."""
    rfs = RootFS(base_dir, backend=backend)
    with rfs.generated(special_prototype) as root:
        etc = os.stat(os.path.join(root, "etc/hostname"))
        var = os.stat(os.path.join(root, "var/hostname.hard"))
        assert (etc.st_ino == var.st_ino) is (backend == "overlayfs")


def test_a_mount_inside_the_prototype_is_neither_copied_nor_shown(
    base_dir: str, backend: str, make_prototype: MakePrototype
) -> None:
    """A filesystem mounted inside the prototype (a ``proc`` a chroot build
    left behind): the root shows the empty directory under it, its files
    are not copied, and the mount in the prototype is untouched."""
    prototype = make_prototype(mutable=True)
    inner = os.path.join(prototype, "var/mounted")
    os.mkdir(inner)
    LinuxSyscalls().mount("rootfs-test", inner, "tmpfs", 0, "size=1M")
    try:
        with open(os.path.join(inner, "secret"), "w") as fh:
            fh.write("not in the prototype\n")
        with RootFS(base_dir, backend=backend).generated(prototype) as root:
            assert os.listdir(os.path.join(root, "var/mounted")) == []
            assert_works(root)
        assert os.path.isfile(os.path.join(inner, "secret"))
    finally:
        LinuxSyscalls().umount(inner, UMOUNT_NOFOLLOW)


# ----------------------------------------------------------------- a prototype that changes
CHANGES = ("etc/hostname", "usr/bin/new", "home/readme", "usr/bin/tool", "newdir", "root", "root2")


def _view(root: str) -> dict[str, str]:
    """What the root shows of the changed paths (never raising)."""
    seen = {}
    for relative in CHANGES:
        path = os.path.join(root, relative)
        try:
            if os.path.isdir(path):
                seen[relative] = "dir"
            else:
                with open(path) as fh:
                    seen[relative] = fh.read()
        except OSError as exc:
            seen[relative] = f"error {exc.errno}"
    return seen


def test_a_prototype_changing_under_its_instances(
    base_dir: str, make_prototype: MakePrototype, leak_guard: None
) -> None:
    """Files changed, added, deleted and a directory renamed in the
    prototype while an overlay and a quilt instance exist: nothing crashes,
    every file of both roots can still be walked and read, writes still
    work, and remove leaves nothing. The quilt behaves deterministically
    (its read-only bind shows the change, its copies keep the snapshot);
    overlay's behaviour is undefined by the kernel and only printed (what
    Linux 6.18 does is in docs/reliability.md)."""
    require_backends(base_dir, "overlayfs", "quilt")
    prototype = make_prototype(mutable=True)
    overlay = RootFS(base_dir, backend="overlayfs").generate(prototype)
    quilt = RootFS(base_dir, backend="quilt").generate(prototype)
    with open(os.path.join(overlay, "etc/passwd"), "a") as fh:  # copied up before the change
        fh.write("mine\n")
    with open(os.path.join(prototype, "etc/hostname"), "w") as fh:
        fh.write("changed\n")
    with open(os.path.join(prototype, "etc/passwd"), "w") as fh:
        fh.write("changed\n")
    with open(os.path.join(prototype, "usr/bin/new"), "w") as fh:
        fh.write("new\n")
    os.unlink(os.path.join(prototype, "home/readme"))
    os.unlink(os.path.join(prototype, "usr/bin/tool"))
    os.makedirs(os.path.join(prototype, "newdir/sub"))
    os.rename(os.path.join(prototype, "root"), os.path.join(prototype, "root2"))
    try:
        for root in (overlay, quilt):
            for dirpath, _, files in os.walk(root):
                for name in files:
                    path = os.path.join(dirpath, name)
                    if stat.S_ISREG(os.lstat(path).st_mode):
                        with open(path, "rb") as fh:
                            fh.read()
            assert_works(root, hostname=None)
        print("overlay after the change:", _view(overlay))
        with open(os.path.join(overlay, "etc/passwd")) as fh:
            assert fh.read().endswith("mine\n")  # a copied-up file is the instance's own
        assert _view(quilt) == {
            "etc/hostname": "prototype\n",  # in a writable copy: the snapshot
            "usr/bin/new": "new\n",  # in the read-only bind: the change shows
            "home/readme": "hello\n",
            "usr/bin/tool": "error 2",
            "newdir": "dir",
            "root": "error 2",
            "root2": "dir",
        }
    finally:
        RootFS(base_dir).remove(overlay)
        RootFS(base_dir).remove(quilt)
    assert instance_mounts(base_dir) == []
