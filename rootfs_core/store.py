"""Instance records, and the marker that says an instance is not finished.

Layout under the read-write base directory::

    .rootfs/records/<id>.json    what the instance is and every step taken for it
    .rootfs/incomplete/<id>      exists while the instance is being made or
                                 removed; whoever works on it holds flock on it
    <id>/root                    the root itself (the other dirs of <id>/ are
                                 the backend's)

The record's step list is written *before* each step is taken, so it is at
once the journal of a generate, the undo log of a failure and the plan of a
remove: one structure, read three ways. A record file is JSON lines: the
record's header, then one line per step, appended as it is taken (appending
is what keeps a generate cheap: replacing a file by rename makes ext4 flush
it to disk, every time). A torn last line, from a process killed mid-write,
names a step that was never taken, and is ignored. The marker is separate from the record
so that the sweep for crashed instances lists one small directory instead of
every record, and its flock tells a crashed owner from a live one.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import re
from collections.abc import Iterator
from typing import Any

from rootfs_core.errors import ErrorId, RootFSError

STATE_DIR = ".rootfs"
ROOT_NAME = "root"
_ID = re.compile(r"^[0-9a-f]{12}$")


@dataclasses.dataclass
class Step:
    """One change made for an instance, and how to take it back.

    ``op`` is ``dir`` (undo: rmdir), ``tree`` (undo: delete the tree, never
    across a mount), ``mount`` (undo: umount2 and confirm) or ``fuse-mount``
    (undo: fusermount3 -u and confirm). ``undo_error``
    names the error id reported if undoing it fails.
    """

    op: str
    path: str
    undo_error: str


@dataclasses.dataclass
class Record:
    """Everything needed to remove an instance, even by another process."""

    id: str
    backend: str
    prototype: str
    root: str
    created: float
    options: dict[str, str]
    steps: list[Step] = dataclasses.field(default_factory=list)

    def header(self) -> dict[str, Any]:
        """The record without its steps: the first line of its file."""
        return {
            "id": self.id,
            "backend": self.backend,
            "prototype": self.prototype,
            "root": self.root,
            "created": self.created,
            "options": self.options,
        }


def _lines(record: Record) -> str:
    return "".join(
        json.dumps(item) + "\n" for item in [record.header(), *map(dataclasses.astuple, record.steps)]
    )


def is_instance_id(text: str) -> bool:
    return bool(_ID.match(text))


class Claim:
    """An exclusive hold on one instance, marking it incomplete while held.

    Releasing without ``finish`` leaves the marker: the instance stays
    incomplete, which is right when the work failed half-way.
    """

    def __init__(self, path: str, fd: int) -> None:
        self._path = path
        self._fd = fd

    def finish(self) -> None:
        """The work is complete: drop the marker (while still holding it)."""
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass

    def release(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Store:
    """Records and markers of one base directory."""

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        self.state_dir = os.path.join(base_dir, STATE_DIR)
        self.records_dir = os.path.join(self.state_dir, "records")
        self.incomplete_dir = os.path.join(self.state_dir, "incomplete")
        for path in (self.state_dir, self.records_dir, self.incomplete_dir):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass

    # paths -------------------------------------------------------------
    def instance_dir(self, instance_id: str) -> str:
        return os.path.join(self.base_dir, instance_id)

    def root_of(self, instance_id: str) -> str:
        return os.path.join(self.base_dir, instance_id, ROOT_NAME)

    def id_of_root(self, root: str) -> str | None:
        """The id if ``root`` has the shape of a root of this base dir, else None.

        Purely by name: no scan of records or of the mount table.
        """
        path = os.path.normpath(os.path.abspath(root))
        parent, leaf = os.path.split(path)
        base, instance_id = os.path.split(parent)
        if leaf == ROOT_NAME and base == self.base_dir and is_instance_id(instance_id):
            return instance_id
        return None

    # records -----------------------------------------------------------
    def new_id(self) -> str:
        while True:
            candidate = os.urandom(6).hex()
            if not os.path.lexists(self.instance_dir(candidate)):
                return candidate

    def _record_path(self, instance_id: str) -> str:
        return os.path.join(self.records_dir, instance_id + ".json")

    def create(self, record: Record) -> None:
        """Write a new record (it must not exist yet). It appears whole or not
        at all, so a reader or a crash never meets an empty one."""
        path = self._record_path(record.id)
        try:
            os.close(self._publish(path, _lines(record).encode()))
        except OSError as exc:
            raise RootFSError(ErrorId.ErrRecord, f"cannot write record {path}", cause=exc) from exc

    def append(self, record: Record, step: Step) -> None:
        """Add ``step`` to the record, on disk first, then in memory."""
        path = self._record_path(record.id)
        line = json.dumps(dataclasses.astuple(step)) + "\n"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            raise RootFSError(ErrorId.ErrRecord, f"cannot write record {path}", cause=exc) from exc
        record.steps.append(step)

    def write(self, record: Record) -> None:
        """Replace the record as a whole (after a partial undo: rare)."""
        path = self._record_path(record.id)
        tmp = self._temp_name(path)
        try:
            with open(tmp, "w", encoding="utf-8") as fh:
                fh.write(_lines(record))
            os.replace(tmp, path)
        except OSError as exc:
            _unlink(tmp)
            raise RootFSError(ErrorId.ErrRecord, f"cannot write record {path}", cause=exc) from exc

    def read(self, instance_id: str) -> Record | None:
        path = self._record_path(instance_id)
        try:
            with open(path, encoding="utf-8") as fh:
                lines = fh.read().split("\n")
            header = json.loads(lines[0])
            steps = []
            for number, line in enumerate(lines[1:], 2):
                if not line:
                    continue
                try:
                    steps.append(Step(*json.loads(line)))
                except (ValueError, TypeError):
                    if number != len(lines):
                        raise  # only a torn last line (no newline yet) is expected
            return Record(steps=steps, **header)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise RootFSError(ErrorId.ErrRecord, f"cannot read record {path}", cause=exc) from exc

    def delete(self, instance_id: str) -> None:
        _unlink(self._record_path(instance_id))

    def sweep_temporaries(self) -> list[str]:
        """Delete the temporary files of processes that died while writing one
        (their names carry the writer's pid); return their paths."""
        swept = []
        for directory in (self.records_dir, self.incomplete_dir):
            for name in os.listdir(directory):
                match = _TEMP.match(name)
                if match and not _alive(int(match.group(1))):
                    _unlink(os.path.join(directory, name))
                    swept.append(os.path.join(directory, name))
        return swept

    def ids(self) -> list[str]:
        return sorted(
            name[:-5]
            for name in os.listdir(self.records_dir)
            if name.endswith(".json") and is_instance_id(name[:-5])
        )

    # markers -----------------------------------------------------------
    def incomplete_ids(self) -> Iterator[str]:
        with os.scandir(self.incomplete_dir) as entries:
            for entry in entries:
                if is_instance_id(entry.name):
                    yield entry.name

    def is_incomplete(self, instance_id: str) -> bool:
        return os.path.exists(os.path.join(self.incomplete_dir, instance_id))

    def claim(self, instance_id: str) -> Claim:
        """Mark the instance incomplete and hold it exclusively, waiting for
        any other holder."""
        claim = self._lock_marker(instance_id, create=True, wait=True)
        assert claim is not None
        return claim

    def claim_abandoned(self, instance_id: str) -> Claim | None:
        """Hold an incomplete instance whose owner is gone, or return None if a
        live process holds it or it is no longer incomplete."""
        return self._lock_marker(instance_id, create=False, wait=False)

    def _lock_marker(self, instance_id: str, *, create: bool, wait: bool) -> Claim | None:
        path = os.path.join(self.incomplete_dir, instance_id)
        while True:
            if create:
                try:
                    # Born locked: the marker appears only once flock is held,
                    # so no sweeper ever finds it unlocked and thinks its
                    # owner dead.
                    return Claim(path, self._publish(path, b"", lock=True))
                except FileExistsError:
                    pass  # someone holds (or held) it: wait for them below
                except OSError as exc:
                    raise RootFSError(ErrorId.ErrRecord, f"cannot create marker {path}", cause=exc) from exc
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                if create:
                    continue  # finished meanwhile: try to create it again
                return None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    return None
                raise
            # The previous holder may have finished (and unlinked the marker)
            # while we waited: then our lock is on a dead inode; start again.
            if os.fstat(fd).st_nlink > 0:
                return Claim(path, fd)
            os.close(fd)
            if not create:
                return None

    # files appearing whole -------------------------------------------------
    def _temp_name(self, path: str) -> str:
        directory, name = os.path.split(path)
        return os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.new")

    def _publish(self, path: str, content: bytes, *, lock: bool = False) -> int:
        """Create ``path`` with ``content`` (and flock held, if ``lock``) by
        linking a finished temporary file into place; return its open fd.
        Raises ``FileExistsError`` if ``path`` exists."""
        tmp = self._temp_name(path)
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            if lock:
                fcntl.flock(fd, fcntl.LOCK_EX)
            if content:
                os.write(fd, content)
            os.link(tmp, path)
        except BaseException:
            os.close(fd)
            raise
        finally:
            _unlink(tmp)
        return fd


_TEMP = re.compile(r"^\..*\.([0-9]+)\.[0-9a-f]{8}\.new$")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
