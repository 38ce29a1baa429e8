"""What reaches the disk when: only a durable transaction (a Commit's)
waits for it; the others survive a kill of the process, not a power loss."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from rootfs_core.testing.fixtures import remove_scratch, scratch_dir

SCRIPT = """
import os, sys
from rootfs_containerd.metadata import Metadata, Row
db = Metadata(sys.argv[1])
def row(key):
    return Row(key, "active", None, "ready", "i", None, 0, 0, 1.0, 1.0, {})
os.write(2, b"<normal>")
for n in range(5):
    with db.transaction():
        db.insert(row(f"n{n}"))
os.write(2, b"<durable>")
with db.transaction(durable=True):
    db.insert(row("d"))
os.write(2, b"<normal-again>")
with db.transaction():
    db.insert(row("after"))
os.write(2, b"<closing>")
db.close()  # its checkpoint flushes
"""

STRACE = ["strace", "-f", "-qq", "-e", "trace=write,fsync,fdatasync"]


def flushes_between_marks(trace: str) -> dict[str, int]:
    """fsync/fdatasync calls after each ``<mark>`` written to stderr."""
    counts: dict[str, int] = {}
    mark = None
    for line in trace.splitlines():
        if "write(2," in line and '"<' in line:
            mark = line.split('"<', 1)[1].split('>"', 1)[0]
            counts[mark] = 0
        elif mark is not None and ("fdatasync(" in line or "fsync(" in line) and "= 0" in line:
            counts[mark] += 1
    return counts


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")
def test_only_a_durable_transaction_flushes_to_the_disk() -> None:
    top = scratch_dir("meta-")
    try:
        trace = os.path.join(top, "trace")
        subprocess.run(
            [*STRACE, "-o", trace, sys.executable, "-c", SCRIPT, os.path.join(top, "snapshots.db")],
            check=True,
            capture_output=True,
        )
        with open(trace, encoding="utf-8", errors="replace") as fh:
            counts = flushes_between_marks(fh.read())
    finally:
        remove_scratch(top)
    assert (counts["normal"], counts["normal-again"]) == (0, 0)
    assert counts["durable"] >= 1
