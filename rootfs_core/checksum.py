"""A digest of a whole directory tree: how the demo, the benchmark and the
tests show that a prototype was not changed by anything made from it."""

from __future__ import annotations

import hashlib
import os
import stat


def tree_checksum(path: str) -> str:
    """A digest of everything a prototype is: names, types, modes, owners,
    sizes, mtimes, file contents, symlink targets, device numbers, xattrs.
    Device nodes and fifos are never opened."""
    digest = hashlib.sha256()
    top = os.fsencode(path)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        dirnames.sort()
        for name in [b".", *sorted(dirnames), *sorted(filenames)]:
            full = os.path.join(dirpath, name) if name != b"." else dirpath
            st = os.lstat(full)
            rel = os.path.relpath(full, top)
            digest.update(rel + b"\0")
            digest.update(
                f"{st.st_mode:o} {st.st_uid} {st.st_gid} {st.st_size} {st.st_mtime_ns} {st.st_rdev}".encode()
            )
            if stat.S_ISLNK(st.st_mode):
                digest.update(os.readlink(full))
            elif stat.S_ISREG(st.st_mode):
                with open(full, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        digest.update(chunk)
            if not stat.S_ISLNK(st.st_mode):
                try:
                    for key in sorted(os.listxattr(full, follow_symlinks=False)):
                        digest.update(key.encode() + os.getxattr(full, key, follow_symlinks=False))
                except OSError:
                    pass
    return digest.hexdigest()
