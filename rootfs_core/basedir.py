"""The read-write base directory: what makes one usable, and safe.

Usable is the seed's constructor checks. Safe is two more things:

- **Owned by the caller alone.** The base directory holds the records that
  say what to unmount and delete. One another user can write is one where
  that user plants a record and root deletes for them; it is refused
  (``ErrRwBaseDirUnsafe``) unless it is the caller's and writable by the
  caller alone. A rootless user's own directory qualifies.
- **A private mount.** On a host whose ``/`` is shared (systemd's default),
  every mount made below it is copied into each peer and slave of ``/``:
  other mount namespaces, and other places of this one. So before the
  first instance is mounted, the base directory is bind-mounted on itself
  and made private (or, if it is a mount point already, made private):
  from then on nothing rootfs mounts in it propagates anywhere, and nothing
  propagates into it. The bind stays (it costs nothing, and is undone by a
  reboot or ``umount BASE`` once no instance is left); ``gc`` and the test
  fixtures know it is there. Without privilege (a rootless user) this is
  not possible, and not attempted.
"""

from __future__ import annotations

import errno
import os
import stat

from rootfs_core import mounttable
from rootfs_core.errors import ErrorId, ImplErrorId, RootFSError
from rootfs_core.store import untrusted
from rootfs_core.syscalls import MS_BIND, MS_PRIVATE, UMOUNT_NOFOLLOW, Syscalls


def check(path: str) -> str:
    """The seed's constructor checks, in the seed's order, then ownership;
    return the real path."""
    try:
        st = os.stat(path)
    except FileNotFoundError as exc:
        raise RootFSError(
            ImplErrorId.ErrRwBaseDirMissing, f"base directory {path!r} not found", cause=exc
        ) from exc
    except OSError as exc:
        raise RootFSError(
            ImplErrorId.ErrRwBaseDirMissing, f"base directory {path!r} unusable", cause=exc
        ) from exc
    if not stat.S_ISDIR(st.st_mode):
        raise RootFSError(ImplErrorId.ErrRwBaseDirIsFile, f"base directory {path!r} is not a directory")
    if st.st_mode & 0o700 != 0o700 or not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise RootFSError(
            ImplErrorId.ErrRwBaseDirNotRw,
            f"base directory {path!r} is not readable and writable by its owner",
        )
    problem = untrusted(st)
    if problem:
        raise RootFSError(
            ImplErrorId.ErrRwBaseDirUnsafe,
            f"base directory {path!r} {problem}: another user could plant state in it that makes rootfs "
            f"unmount and delete for them. Use a directory owned by uid {os.geteuid()} and writable by it "
            "alone (e.g. chmod go-w, or a directory of your own)",
        )
    return os.path.realpath(path)


def make_private(base_dir: str, syscalls: Syscalls) -> None:
    """Make ``base_dir`` a private mount (see the module's docstring): bind it
    on itself first unless it is a mount point already. Cheap when it is
    done already (one statx and one mount(2) that changes nothing)."""
    if os.geteuid() != 0:
        return  # without privilege neither call is allowed: see the docstring
    bound = False
    try:
        if not syscalls.is_mountpoint(base_dir):
            syscalls.mount(base_dir, base_dir, "", MS_BIND, "")
            bound = True
        syscalls.mount("", base_dir, "", MS_PRIVATE, "")
    except OSError as exc:
        if bound:
            try:
                syscalls.umount(base_dir, UMOUNT_NOFOLLOW)  # not half done
            except OSError:
                pass
        if exc.errno == errno.EPERM:
            # Root without CAP_SYS_ADMIN (a container): no mount at all is
            # allowed, and each backend's probe says so in its own words.
            return
        if exc.errno == errno.EINVAL and mounttable.is_unbindable(base_dir):
            why = (
                "it is on an unbindable mount, which the kernel refuses to bind (and every root is made "
                "of binds and clones): make that mount private instead (mount --make-private), or use "
                "another base directory"
            )
        else:
            why = "rootfs makes it a private mount so that nothing it mounts there propagates elsewhere"
        raise RootFSError(
            ErrorId.ErrCreateMountDir,
            f"cannot make base directory {base_dir} a private mount: {why}",
            cause=exc,
        ) from exc
