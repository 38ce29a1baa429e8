"""The snapshotter's metadata: keys, parents, kinds, labels and timestamps,
in one SQLite database (``<base>/.rootfs/containerd/snapshots.db``), and the
removals still to do.

A commit reserves its row (``state = 'preparing'``) before the slow work of
the core begins and makes it ``ready`` after it, each step one transaction;
a prepare writes its row once, ready, after its instance is made (an
instance no row names is deleted by the reconciliation). A Remove deletes
the row and records, in the same transaction, the instance or layer left to
delete (``removals``), which a worker thread deletes after the reply. So a
crash at any moment leaves rows and removals the reconciliation at start-up
can judge against the core's records and layers (see
``service.Snapshotter.reconcile``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import threading
from collections.abc import Iterator
from typing import Any

ACTIVE = "active"
VIEW = "view"
COMMITTED = "committed"

# Row states. Only the last two are visible through the service.
PREPARING = "preparing"  # reserved; the core is making its layer (a commit's name)
READY = "ready"
COMMITTING = "committing"  # an active one being committed
VISIBLE = (READY, COMMITTING)

# What a removal deletes: an instance (an active snapshot or a view) or a stored layer.
INSTANCE = "instance"
LAYER = "layer"

_SCHEMA = """
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS snapshots (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    parent TEXT,
    state TEXT NOT NULL,
    instance TEXT,
    layer TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    inodes INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots (parent);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS removals (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    what TEXT NOT NULL,
    id TEXT NOT NULL
);
-- Rows an earlier version left 'removing' (it removed before replying):
-- removals like any other now.
INSERT INTO removals (what, id)
    SELECT CASE kind WHEN 'committed' THEN 'layer' ELSE 'instance' END, COALESCE(layer, instance)
    FROM snapshots WHERE state = 'removing' AND COALESCE(layer, instance) IS NOT NULL;
DELETE FROM snapshots WHERE state = 'removing';
COMMIT;
"""


@dataclasses.dataclass(frozen=True)
class Removal:
    seq: int  # removals are done in the order they were asked for
    what: str  # INSTANCE or LAYER
    id: str


@dataclasses.dataclass(frozen=True)
class Row:
    key: str
    kind: str
    parent: str | None
    state: str
    instance: str | None
    layer: str | None
    bytes: int
    inodes: int
    created: float
    updated: float
    labels: dict[str, str]


_COLUMNS = "key, kind, parent, state, instance, layer, bytes, inodes, created, updated, labels"


def _row(values: tuple[object, ...]) -> Row:
    key, kind, parent, state, instance, layer, size, inodes, created, updated, labels = values
    return Row(
        str(key),
        str(kind),
        None if parent is None else str(parent),
        str(state),
        None if instance is None else str(instance),
        None if layer is None else str(layer),
        int(size),  # type: ignore[call-overload]
        int(inodes),  # type: ignore[call-overload]
        float(created),  # type: ignore[arg-type]
        float(updated),  # type: ignore[arg-type]
        dict(json.loads(str(labels))),
    )


class Metadata:
    """One connection, used by every thread under one lock; each public
    method is a transaction of its own unless run inside ``transaction()``.

    The snapshots table is also kept in memory, as the connection sees it
    (the transaction under way included; a rollback puts it back): reads
    come from there. containerd's collector lists every snapshot at each
    collection while it holds up the snapshotter's Prepares, and reading
    and decoding the rows was half of that List's cost (5 us a row); a
    Prepare's lookups of its key and its parent's chain cost a query each.
    Only this process writes the database."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._depth = 0
        self._durable = False  # the transaction under way flushes at its commit
        # The rows by key, and what the transaction under way changed:
        # (key, its row before), oldest first.
        self._rows: dict[str, Row] = {}
        self._undo: list[tuple[str, Row | None]] = []
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            for values in self._db.execute(f"SELECT {_COLUMNS} FROM snapshots"):
                row = _row(values)
                self._rows[row.key] = row

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def locked(self) -> Iterator[Metadata]:
        """The lock of every transaction held, without one: what is decided
        in the block (reading rows, and state of the caller's that goes with
        them) is not changed by any transaction meanwhile."""
        with self._lock:
            yield self

    @contextlib.contextmanager
    def transaction(self, *, durable: bool = False) -> Iterator[Metadata]:
        """Everything in the block at once, or nothing (the lock held throughout).

        Every transaction survives a kill of the process once it returns
        (WAL, ``synchronous=NORMAL``); a ``durable`` one also survives a power
        loss (the log is flushed to the disk before it returns, with all
        before it). Only what containerd cannot make again needs that: a
        committed snapshot (an image layer). A lost prepare or remove is
        reconciled like a kill's (the core's records are not flushed either),
        and containerd's collector repeats a Remove it finds undone.
        """
        with self._lock:
            outer = self._depth == 0
            if not outer and durable and not self._durable:
                raise ValueError("a durable transaction cannot be nested in one that is not")
            if outer:
                if durable:
                    self._db.execute("PRAGMA synchronous=FULL")
                self._durable = durable
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if outer:
                    self._roll_back()
                raise
            self._depth -= 1
            if outer:
                try:
                    self._db.execute("COMMIT")
                except BaseException:
                    self._roll_back()  # a failed COMMIT (a full disk) may leave it open
                    raise
                self._undo.clear()
                self._relax()

    def _roll_back(self) -> None:
        try:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
        finally:
            for key, before in reversed(self._undo):
                self._put(key, before)
            self._undo.clear()
            self._relax()

    def _relax(self) -> None:
        if self._durable:
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._durable = False

    # ------------------------------------------------------------------ reads
    def get(self, key: str) -> Row | None:
        with self._lock:
            return self._rows.get(key)

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._rows

    def visible(self, key: str) -> Row | None:
        row = self.get(key)
        return row if row is not None and row.state in VISIBLE else None

    def rows(self) -> list[Row]:
        """Every row, oldest first."""
        with self._lock:
            found = list(self._rows.values())
        return sorted(found, key=lambda row: (row.created, row.key))

    def children(self, key: str) -> list[str]:
        with self._lock:
            return [row.key for row in self._rows.values() if row.parent == key]

    def chain(self, key: str) -> list[Row]:
        """The snapshot and its ancestors, nearest first."""
        chain: list[Row] = []
        seen: set[str] = set()
        current: str | None = key
        while current:
            if current in seen:
                raise ValueError(f"the parents of {key!r} make a cycle at {current!r}")
            seen.add(current)
            row = self.get(current)
            if row is None:
                raise KeyError(current)
            chain.append(row)
            current = row.parent
        return chain

    def removals(self) -> list[Removal]:
        with self._lock:
            found = self._db.execute("SELECT seq, what, id FROM removals ORDER BY seq").fetchall()
        return [Removal(int(seq), str(what), str(ident)) for seq, what, ident in found]

    def get_meta(self, name: str) -> str | None:
        with self._lock:
            found = self._db.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if found is None else str(found[0])

    # ----------------------------------------------------------------- writes
    def set_meta(self, name: str, value: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))

    def insert(self, row: Row) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT INTO snapshots ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    row.key,
                    row.kind,
                    row.parent,
                    row.state,
                    row.instance,
                    row.layer,
                    row.bytes,
                    row.inodes,
                    row.created,
                    row.updated,
                    json.dumps(row.labels, sort_keys=True),
                ),
            )
            self._changed(row.key, dataclasses.replace(row, labels=dict(row.labels)))

    def update(self, key: str, **fields: Any) -> None:
        stored = dict(fields)
        if "labels" in fields:
            fields["labels"] = dict(fields["labels"])
            stored["labels"] = json.dumps(fields["labels"], sort_keys=True)
        names = ", ".join(f"{name} = ?" for name in stored)
        with self._lock:
            self._db.execute(f"UPDATE snapshots SET {names} WHERE key = ?", (*stored.values(), key))
            before = self._rows.get(key)
            if before is not None:
                self._changed(key, dataclasses.replace(before, **fields))

    def delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM snapshots WHERE key = ?", (key,))
            if key in self._rows:
                self._changed(key, None)

    def _changed(self, key: str, row: Row | None) -> None:
        """The row of ``key`` is now ``row`` (None: deleted), as in the database."""
        if self._depth:
            self._undo.append((key, self._rows.get(key)))
        self._put(key, row)

    def _put(self, key: str, row: Row | None) -> None:
        if row is None:
            self._rows.pop(key, None)
        else:
            self._rows[key] = row

    def add_removal(self, what: str, ident: str) -> None:
        with self._lock:
            self._db.execute("INSERT INTO removals (what, id) VALUES (?, ?)", (what, ident))

    def drop_removal(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM removals WHERE seq = ?", (seq,))
