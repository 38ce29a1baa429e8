"""What an instance's writable layer holds: bytes and inodes.

Bytes are allocated blocks (``st_blocks``), as ``du`` and container
platforms count them, so a sparse file counts what it occupies; a file with
several links, or seen twice (an overlay index entry is a hardlink of the
upper file), counts once. The walk never leaves the filesystem it starts on
(a mount inside a writable layer is not the instance's data) and never
follows a symlink, and it has no depth limit: a root's content is written
by whoever runs inside it.
"""

from __future__ import annotations

import dataclasses
import os
import stat


@dataclasses.dataclass(frozen=True)
class Usage:
    """What ``RootFS.usage`` reports."""

    id: str
    bytes: int
    inodes: int


def measure(paths: list[str]) -> tuple[int, int]:
    """``(bytes allocated, inodes)`` of the trees at ``paths`` together."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in paths:
        try:
            st = os.lstat(top)
        except FileNotFoundError:
            continue
        device = st.st_dev
        pending = [top]
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
        while pending:
            directory = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue  # gone meanwhile, or a path too long to name
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if st.st_dev != device:
                    continue  # another filesystem mounted here: not the layer's
                key = (st.st_dev, st.st_ino)
                if key not in seen:
                    seen.add(key)
                    total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    pending.append(entry.path)
    return total, len(seen)
