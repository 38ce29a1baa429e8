"""The sample prototype rootfs builds for itself.

So that the first command a newcomer runs shows the real job on a machine
with no prototype at hand: a busybox tree when a static busybox is installed
(``apt-get install busybox-static``), else a minimal tree of plain files.
The layout has the seed's directories (``proc dev etc home sbin var tmp``),
so every in-tree backend can use it.
"""

from __future__ import annotations

import errno
import os
import stat

from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.mounttable import mounts_below
from rootfs_core.syscalls import LinuxSyscalls

DEFAULT_SAMPLE_DIR = "/var/cache/rootfs/sample-prototype"
_DIRS = ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "home", "root", "var/log", "tmp")
_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hostname": "rootfs-sample\n",
    "etc/os-release": 'NAME="rootfs sample"\nID=rootfs-sample\n',
}


def find_busybox() -> str | None:
    """A statically linked busybox, which runs inside any root."""
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.isfile(candidate):
            return candidate
    return None


def build_sample(path: str) -> str:
    """Build the sample prototype at ``path`` (which must not exist); return
    a short description of what was built."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    staging = path + ".building"
    _remove_staging(staging)
    os.mkdir(staging, 0o755)  # never follows a symlink: fails if anything is (again) there
    for name in _DIRS:
        os.makedirs(os.path.join(staging, name), exist_ok=True)
    os.chmod(os.path.join(staging, "tmp"), 0o1777)
    for name, text in _FILES.items():
        with open(os.path.join(staging, name), "w", encoding="utf-8") as fh:
            fh.write(text)
    busybox = find_busybox()
    if busybox is not None:
        import shutil  # here, not at the top: generate with the sample built needs neither
        import subprocess

        shutil.copy2(busybox, os.path.join(staging, "bin/busybox"))
        applets = subprocess.run(
            [busybox, "--list-full"], capture_output=True, text=True, check=True
        ).stdout.split()
        for applet in applets:
            link = os.path.join(staging, applet)
            if not os.path.lexists(link):
                os.makedirs(os.path.dirname(link), exist_ok=True)
                os.symlink(os.path.relpath(os.path.join(staging, "bin/busybox"), os.path.dirname(link)), link)
        what = f"busybox with {len(applets)} applets"
    else:
        what = "a minimal tree without busybox (install busybox-static for a usable shell)"
    if os.geteuid() == 0:
        for name, minor in (("null", 3), ("zero", 5)):
            os.mknod(os.path.join(staging, "dev", name), 0o666 | 0o020000, os.makedev(1, minor))
    os.rename(staging, path)
    return what


def _remove_staging(staging: str) -> None:
    """Delete what a build that stopped half-way left at ``staging``.

    A symlink (or any other non-directory) is removed itself, never followed.
    A directory is deleted without ever crossing into a mount: one below it
    (someone's bind mount, say) is refused with ``ErrRemoveMountDir`` and
    nothing more is touched, since deleting through it would delete what
    is mounted there.
    """
    try:
        st = os.lstat(staging)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        # Refused before anything is deleted; remove_tree refuses too (as the
        # last word, should a mount appear meanwhile).
        real = os.path.join(os.path.realpath(os.path.dirname(staging)), os.path.basename(staging))
        try:
            mounted = mounts_below(real)
        except OSError:
            mounted = []  # no mount table (no /proc): remove_tree alone guards
        if mounted:
            raise RootFSError(
                ErrorId.ErrRemoveMountDir,
                f"cannot delete the unfinished sample {staging}: {', '.join(mounted)} "
                f"{'is a mount point' if len(mounted) == 1 else 'are mount points'}; unmount first",
            )
    try:
        if stat.S_ISDIR(st.st_mode):
            LinuxSyscalls().remove_tree(staging)
        else:
            os.unlink(staging)
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            where = exc.filename or staging
            message = (
                f"cannot delete the unfinished sample {staging}: {where} is a mount point; unmount first"
            )
        else:
            message = f"cannot delete the unfinished sample {staging}"
        raise RootFSError(ErrorId.ErrRemoveMountDir, message, cause=exc) from exc


def ensure_sample(path: str = DEFAULT_SAMPLE_DIR) -> str:
    """The sample prototype's path, built on first use."""
    if not os.path.isdir(path):
        build_sample(path)
    return path
