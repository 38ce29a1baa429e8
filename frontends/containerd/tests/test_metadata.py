"""What reaches the disk when: only a durable transaction (a Commit's)
waits for it, and a Commit first writes the whole filesystem (syncfs), so
its row never reaches the disk before its layer's files; the others survive
a kill of the process, not a power loss."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from conftest import drop_empty_layer
from rootfs_core import RootFS
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


COMMIT = """
import os, sys
from rootfs_containerd.service import Snapshotter
s = Snapshotter(sys.argv[1], sys.argv[2], sync_commits=sys.argv[3] == "sync")
((_, root, _),) = s.prepare("a", "", {})
with open(os.path.join(root, "file"), "w") as fh:
    fh.write("data")
os.write(2, b"<commit>")
s.commit("A", "a", {})
os.write(2, b"<committed>")
s.remove("A")
s.close()
"""


def _syscalls_after(trace: str, mark: str, until: str) -> list[str]:
    """The syncfs and fdatasync calls (that succeeded) between two marks, in order."""
    calls: list[str] = []
    inside = False
    for line in trace.splitlines():
        if "write(2," in line and f'"<{mark}>"' in line:
            inside = True
        elif "write(2," in line and f'"<{until}>"' in line:
            break
        elif inside and "= 0" in line:
            calls += [name for name in ("syncfs", "fdatasync") if f"{name}(" in line]
    return calls


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "no-sync"])
def test_a_commit_syncs_the_filesystem_before_its_row(base_dir: str, backend: str, sync: bool) -> None:
    trace = os.path.join(scratch_dir("trace-"), "trace")
    try:
        argv = [sys.executable, "-c", COMMIT, base_dir, backend, "sync" if sync else "no"]
        subprocess.run([*STRACE[:-1], "trace=write,syncfs,fdatasync", "-o", trace, *argv], check=True)
        with open(trace, encoding="utf-8", errors="replace") as fh:
            calls = _syscalls_after(fh.read(), "commit", "committed")
    finally:
        remove_scratch(os.path.dirname(trace))
    assert RootFS(base_dir, sweep=False).instances() == []
    drop_empty_layer(base_dir)
    if sync:
        assert calls[:1] == ["syncfs"] and calls.count("syncfs") == 1
        assert "fdatasync" in calls[1:]  # the durable row, after
    else:
        assert "syncfs" not in calls and "fdatasync" in calls


def _on_disk(path: str) -> list[tuple[str, str, str | None, str]]:
    """The rows as a fresh connection reads them from the file: (key, state, layer, labels)."""
    from rootfs_containerd.metadata import Metadata

    fresh = Metadata(path)
    try:
        return [(r.key, r.state, r.layer, json.dumps(r.labels)) for r in fresh.rows()]
    finally:
        fresh.close()


def test_rows_read_from_memory_follow_commits_and_rollbacks() -> None:
    """What the open connection reads (kept in memory) is what the file
    holds, after a transaction that commits and one that fails midway."""
    from rootfs_containerd.metadata import Metadata, Row

    top = scratch_dir("meta-")
    path = os.path.join(top, "snapshots.db")
    try:
        db = Metadata(path)
        try:
            with db.transaction():
                for key in ("a", "b", "c"):
                    db.insert(Row(key, "active", None, "ready", key, None, 0, 0, 1.0, 1.0, {"n": key}))
            with pytest.raises(RuntimeError), db.transaction():
                db.update("a", state="committing", labels={"n": "changed"})
                db.delete("b")
                db.insert(Row("d", "active", None, "ready", "d", None, 0, 0, 2.0, 2.0, {}))
                with pytest.raises(sqlite3.IntegrityError):
                    db.insert(Row("c", "active", None, "ready", "c", None, 0, 0, 2.0, 2.0, {}))
                raise RuntimeError("midway")
            db.update("c", layer="L", labels={"n": "c2"})
            db.delete("a")
            seen = [(r.key, r.state, r.layer, json.dumps(r.labels)) for r in db.rows()]
            assert seen == [("b", "ready", None, '{"n": "b"}'), ("c", "ready", "L", '{"n": "c2"}')]
            assert seen == _on_disk(path)
            assert db.exists("b") and not db.exists("a") and db.children("b") == []
        finally:
            db.close()
    finally:
        remove_scratch(top)
