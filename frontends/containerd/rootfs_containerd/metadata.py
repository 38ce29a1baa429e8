"""The snapshotter's metadata: keys, parents, kinds, labels and timestamps,
in one SQLite database (``<base>/.rootfs/containerd/snapshots.db``).

A row is reserved (``state = 'preparing'``) before the slow work of the core
begins and made ``ready`` after it, each step one transaction, so that a
crash at any moment leaves rows the reconciliation at start-up can judge
against the core's records and layers (see ``service.Snapshotter.reconcile``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import threading
from collections.abc import Iterator

ACTIVE = "active"
VIEW = "view"
COMMITTED = "committed"

# Row states. Only the last three are visible through the service.
PREPARING = "preparing"  # reserved; the core is making its instance (or layer)
READY = "ready"
COMMITTING = "committing"  # an active one being committed
REMOVING = "removing"  # its instance or layer is being deleted
VISIBLE = (READY, COMMITTING, REMOVING)

_SCHEMA = """
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
"""


@dataclasses.dataclass
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
    method is a transaction of its own unless run inside ``transaction()``."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.RLock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._depth = 0
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Metadata]:
        """Everything in the block at once, or nothing (the lock held throughout)."""
        with self._lock:
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield self
            except BaseException:
                self._depth -= 1
                if outer:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._db.execute("COMMIT")

    # ------------------------------------------------------------------ reads
    def get(self, key: str) -> Row | None:
        with self._lock:
            found = self._db.execute(f"SELECT {_COLUMNS} FROM snapshots WHERE key = ?", (key,)).fetchone()
        return None if found is None else _row(found)

    def visible(self, key: str) -> Row | None:
        row = self.get(key)
        return row if row is not None and row.state in VISIBLE else None

    def rows(self) -> list[Row]:
        with self._lock:
            found = self._db.execute(f"SELECT {_COLUMNS} FROM snapshots ORDER BY created, key").fetchall()
        return [_row(values) for values in found]

    def children(self, key: str) -> list[str]:
        with self._lock:
            found = self._db.execute("SELECT key FROM snapshots WHERE parent = ?", (key,)).fetchall()
        return [str(values[0]) for values in found]

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

    def update(self, key: str, **fields: object) -> None:
        if "labels" in fields:
            fields["labels"] = json.dumps(fields["labels"], sort_keys=True)
        names = ", ".join(f"{name} = ?" for name in fields)
        with self._lock:
            self._db.execute(f"UPDATE snapshots SET {names} WHERE key = ?", (*fields.values(), key))

    def delete(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM snapshots WHERE key = ?", (key,))
