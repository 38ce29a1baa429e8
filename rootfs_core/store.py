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
names a step that was never taken, and is ignored. The marker is a name in
a directory of its own so that the sweep for crashed instances lists one
small directory instead of every record, and its flock tells a crashed owner
from a live one.

One inode per instance: the marker is, whenever it can be, a second name of
the record's own file (a generate links its new record in as both; a remove
links the record it locked in as the marker), so a generate or a remove
creates one file, opens it once, and appends and reads through that one
descriptor (``Claim.journal``). The record is always read at its own name, so
a marker that is a separate empty file (there was no record to lock, or an
earlier release made it) serves just as well, and old base directories need
nothing done to them.
"""

from __future__ import annotations

import dataclasses
import enum
import errno
import fcntl
import json
import os
import re
import stat
from collections.abc import Iterator
from typing import Any

from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.syscalls import inherit_fd, release_fd

STATE_DIR = ".rootfs"
ROOT_NAME = "root"
_ID = re.compile(r"[0-9a-f]{12}")
# The ops a journal may hold (see ``Step``); anything else is a damaged or
# planted record.


class Op(enum.StrEnum):
    """The kinds of journal step (see ``Step``), written to records as
    their values."""

    DIR = "dir"
    TREE = "tree"
    MOUNT = "mount"
    FUSE_MOUNT = "fuse-mount"
    DAEMON = "daemon"


MOUNT_OPS = (Op.MOUNT, Op.FUSE_MOUNT)
_OPS = {op.value: op for op in Op}
_REMOVING = {"removing": True}  # the journal line that says a removal began
# The journal lines of a commit: begun (the instance's data is being made a
# layer: a sweep keeps the instance), then published (the layer is whole: a
# sweep takes the rest apart).
_COMMITTING = {"committing": True}
_COMMITTED = {"committed": True}
# A mount again (after a reboot) began: a sweep unmounts what it mounted and
# keeps the instance, never takes its data apart.
_REMOUNTING = {"remounting": True}
_REMOVING_LINE, _COMMITTING_LINE, _COMMITTED_LINE, _REMOUNTING_LINE = (
    json.dumps(item) + "\n" for item in (_REMOVING, _COMMITTING, _COMMITTED, _REMOUNTING)
)


@dataclasses.dataclass
class Step:
    """One change made for an instance, and how to take it back.

    ``op`` is ``dir`` (undo: rmdir), ``tree`` (undo: delete the tree, never
    across a mount), ``mount`` (undo: umount2 and confirm), ``fuse-mount``
    (undo: fusermount3 -u and confirm) or ``daemon`` (the FUSE daemon
    serving the mount at ``path``, ``detail`` being ``"PID:START"``, its pid
    and start time; undo: wait for exactly that process to exit once
    unmounted). ``undo_error`` is the error id reported if undoing it
    fails. Records written before ``detail`` existed have three fields.
    """

    op: Op
    path: str
    undo_error: ErrorId
    detail: str = ""

    def row(self) -> tuple[str, str, str, str]:
        """Its journal line's fields (``dataclasses.astuple`` would deep-copy
        each one, on every step of every generate)."""
        return (self.op.value, self.path, self.undo_error.name, self.detail)


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
    # Set once the first step of a removal took effect: from then on the
    # instance is never ``ready`` again, whatever later attempts do.
    removing: bool = False
    # The layers, bottom first (``prototype`` is the first); a record
    # written before layers existed has the prototype alone.
    layers: list[str] = dataclasses.field(default_factory=list)
    read_only: bool = False
    committing: bool = False  # a commit began (see ``_COMMITTING``)
    committed: bool = False  # its layer was published
    remounting: bool = False  # a mount again began (see ``_REMOUNTING``)

    def __post_init__(self) -> None:
        if not self.layers and self.prototype:
            self.layers = [self.prototype]

    def header(self) -> dict[str, Any]:
        """The record without its steps: the first line of its file."""
        return {
            "id": self.id,
            "backend": self.backend,
            "prototype": self.prototype,
            "root": self.root,
            "created": self.created,
            "options": self.options,
            "layers": self.layers,
            "read_only": self.read_only,
        }


def _lines(record: Record) -> str:
    items: list[object] = [record.header(), *(step.row() for step in record.steps)]
    if record.removing:
        items.append(_REMOVING)
    if record.committing:
        items.append(_COMMITTING)
    if record.committed:
        items.append(_COMMITTED)
    if record.remounting:
        items.append(_REMOUNTING)
    return "".join(json.dumps(item) + "\n" for item in items)


def is_instance_id(text: str) -> bool:
    """Exactly twelve lowercase hex digits (no trailing newline, no more)."""
    return _ID.fullmatch(text) is not None


def _parse(lines: list[str], instance_id: str, instance_dir: str) -> Record:
    """A record from its file's lines, refusing anything a valid journal
    cannot hold: a record is state on disk, and state may be damaged or
    planted. Raises ``ValueError`` (or ``TypeError``) with the reason."""
    header = json.loads(lines[0])
    if not isinstance(header, dict):
        raise ValueError("the header is not an object")
    expected: dict[str, type | tuple[type, ...]] = {
        "id": str,
        "backend": str,
        "prototype": str,
        "root": str,
        "created": (int, float),
    }
    for key, kind in expected.items():
        if not isinstance(header.get(key), kind) or isinstance(header.get(key), bool):
            raise ValueError(f"header field {key!r} is missing or has the wrong type")
    options = header.get("options")
    if not isinstance(options, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in options.items()
    ):
        raise ValueError("header field 'options' is not an object of strings")
    if header["id"] != instance_id:
        raise ValueError(f"the header names instance {header['id']!r}, the file {instance_id!r}")
    if header["root"] != os.path.join(instance_dir, ROOT_NAME):
        raise ValueError(f"the header's root {header['root']!r} is not this instance's")
    layers = header.get("layers", [])
    if not isinstance(layers, list) or not all(isinstance(layer, str) for layer in layers):
        raise ValueError("header field 'layers' is not a list of strings")
    if not isinstance(header.get("read_only", False), bool):
        raise ValueError("header field 'read_only' is not a boolean")
    record = Record(
        header["id"],
        header["backend"],
        header["prototype"],
        header["root"],
        header["created"],
        options,
        layers=list(layers),
        read_only=header.get("read_only", False),
    )
    for number, line in enumerate(lines[1:], 2):
        if not line:
            continue
        try:
            item = json.loads(line)
        except ValueError:
            if number != len(lines):
                raise
            continue  # only a torn last line (no newline yet) is expected
        if item == _REMOVING:
            record.removing = True
            continue
        if item == _COMMITTING:
            record.committing = True
            continue
        if item == _COMMITTED:
            record.committed = True
            continue
        if item == _REMOUNTING:
            record.remounting = True
            continue
        if (
            not isinstance(item, list)
            or not 3 <= len(item) <= 4
            or not all(isinstance(field, str) for field in item)
        ):
            raise ValueError(f"line {number} is not a step")
        if item[0] not in _OPS or item[2] not in ErrorId.__members__:
            raise ValueError(f"line {number} names an unknown step or error id")
        step = Step(_OPS[item[0]], item[1], ErrorId[item[2]], *item[3:])
        if not _within(step.path, instance_dir) or os.path.normpath(step.path) != step.path:
            raise ValueError(f"line {number} names {step.path!r}, outside the instance")
        record.steps.append(step)
    return record


def _within(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent + "/")


class Claim:
    """An exclusive hold on one instance, marking it incomplete while held.

    Releasing without ``finish`` leaves the marker: the instance stays
    incomplete, which is right when the work failed half-way.

    ``journal`` is an fd of the record's file, open for appending, through
    which the store appends to and reads the record instead of opening it
    for every step: the lock's own ``fd`` when the marker is the record's
    file (``is_record``), the new file's once the record is rewritten under
    the claim, else None (by its name). The claim registers itself in
    ``held``, the store's claims of this process.
    """

    def __init__(
        self, instance_id: str, path: str, fd: int, held: dict[str, Claim], *, is_record: bool = False
    ) -> None:
        self._id = instance_id
        self._path = path
        self._fd = fd
        self._held = held
        self.journal = fd if is_record else None
        held[instance_id] = self
        # A copier started while the claim is held holds the lock too, so a
        # sweep never takes the instance for abandoned while it still writes
        # there (its owner killed, it not yet dead of its own death signal).
        inherit_fd(fd)

    def finish(self) -> None:
        """The work is complete: drop the marker (while still holding it)."""
        try:
            os.unlink(self._path)
        except FileNotFoundError:
            pass

    def set_journal(self, fd: int | None) -> None:
        """Append to and read the record through ``fd`` from now on (None:
        by its name), closing the descriptor this replaces unless it is the
        lock's own."""
        if self.journal is not None and self.journal != self._fd:
            os.close(self.journal)
        self.journal = fd

    def release(self) -> None:
        self.set_journal(None)
        if self._held.get(self._id) is self:
            del self._held[self._id]
        release_fd(self._fd)
        os.close(self._fd)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Store:
    """Records and markers of one base directory.

    The state directory is made only when something is to be stored (the
    first instance, or a probe's throw-away one): a command that only reads,
    or one refused before it probes, writes nothing, and a directory rootfs
    never initialised is never taken for a base directory (``initialised``).
    """

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        self.state_dir = os.path.join(base_dir, STATE_DIR)
        self.records_dir = os.path.join(self.state_dir, "records")
        self.incomplete_dir = os.path.join(self.state_dir, "incomplete")
        # The claims this process holds, by instance id: the records are
        # appended to, read and rewritten through their journals.
        self._claims: dict[str, Claim] = {}

    @property
    def initialised(self) -> bool:
        """Whether rootfs has stored anything here (its state directory exists)."""
        return os.path.isdir(self.state_dir)

    def ensure(self) -> None:
        """Create the state directory, private to its owner, if it is missing."""
        for path in (self.state_dir, self.records_dir, self.incomplete_dir):
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                raise RootFSError(ErrorId.ErrRecord, f"cannot create {path}", cause=exc) from exc

    def check_trusted(self) -> None:
        """Refuse state that someone other than the caller could have written:
        a record is a plan of what to unmount and delete, so one planted by
        another user would make us delete for them. Each state directory must
        be a real directory of the caller's, writable by nobody else."""
        for path in (self.state_dir, self.records_dir, self.incomplete_dir):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise RootFSError(ErrorId.ErrRecord, f"cannot inspect {path}", cause=exc) from exc
            problem = untrusted(st)
            if problem:
                raise RootFSError(
                    ErrorId.ErrRecord,
                    f"state directory {path} {problem}: refusing to use it (rootfs state must be "
                    f"owned by uid {os.geteuid()} and writable by it alone)",
                )

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

    def record_path(self, instance_id: str) -> str:
        return os.path.join(self.records_dir, instance_id + ".json")

    def claim_new(self, record: Record) -> Claim:
        """Create the record of a new instance, marked incomplete and held:
        one file, linked in as the marker, then as the record, so that no
        record appears unmarked before its instance is made."""
        marker, path = self._marker(record.id), self.record_path(record.id)
        try:
            fd = self._born_locked(_lines(record).encode(), [marker, path])
        except OSError as exc:
            raise RootFSError(ErrorId.ErrRecord, f"cannot create record {path}", cause=exc) from exc
        return Claim(record.id, marker, fd, self._claims, is_record=True)

    def append(self, record: Record, step: Step) -> None:
        """Add ``step`` to the record, on disk first, then in memory."""
        self._append(record.id, json.dumps(step.row()) + "\n")
        record.steps.append(step)

    def write(self, record: Record) -> None:
        """Replace the record as a whole (after a partial undo: rare). Under a
        claim, the new file becomes its journal."""
        path = self.record_path(record.id)
        tmp = self._temp_name(path)
        try:
            fd = os.open(tmp, _NEW_FILE, 0o600)
            try:
                os.write(fd, _lines(record).encode())
                os.replace(tmp, path)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            unlink_if_present(tmp)
            raise RootFSError(ErrorId.ErrRecord, f"cannot write record {path}", cause=exc) from exc
        claim = self._claims.get(record.id)
        if claim is None:
            os.close(fd)
        else:
            claim.set_journal(fd)

    def mark_removing(self, record: Record) -> None:
        """Note in the journal, before the first undo takes effect, that the
        instance is being taken apart: it is never ``ready`` again."""
        if not record.removing:
            self._append(record.id, _REMOVING_LINE)
            record.removing = True

    def mark_committing(self, record: Record) -> None:
        """Note in the journal, before a commit's first change, that the
        instance's data is becoming a layer: a killed commit is not swept away."""
        self._append(record.id, _COMMITTING_LINE)
        record.committing = True

    def mark_remounting(self, record: Record) -> None:
        """Note that the instance is being mounted again: a killed attempt is
        undone by unmounting, never by deleting."""
        self._append(record.id, _REMOUNTING_LINE)
        record.remounting = True

    def mark_committed(self, record: Record) -> None:
        """Note that the commit's layer is published: what is left may go."""
        self._append(record.id, _COMMITTED_LINE)
        record.committed = True

    def _append(self, instance_id: str, line: str) -> None:
        """Append ``line`` to the record: through the claim's journal if this
        process holds one, else by the record's name."""
        claim = self._claims.get(instance_id)
        try:
            if claim is not None and claim.journal is not None:
                os.write(claim.journal, line.encode())
                return
            fd = os.open(self.record_path(instance_id), os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as exc:
            path = self.record_path(instance_id)
            raise RootFSError(ErrorId.ErrRecord, f"cannot write record {path}", cause=exc) from exc

    def read(self, instance_id: str) -> Record | None:
        """The record of ``instance_id``, or None if there is none. A record
        that is damaged, of the wrong shape, or names anything outside its
        instance raises ``RootFSError(ErrRecord)``."""
        path = self.record_path(instance_id)
        claim = self._claims.get(instance_id)
        journal = claim.journal if claim is not None else None
        try:
            fd = journal if journal is not None else os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RootFSError(ErrorId.ErrRecord, f"cannot read record {path}", cause=exc) from exc
        try:
            st = os.fstat(fd)
            problem = untrusted(st, directory=False)
            if problem:
                raise ValueError(f"the file {problem}")
            # Records only grow, and only under a claim: what fstat saw is
            # whole lines, at most a torn last one (which ``_parse`` ignores).
            lines = os.pread(fd, st.st_size, 0).decode().split("\n")
            return _parse(lines, instance_id, self.instance_dir(instance_id))
        except (OSError, ValueError, TypeError, UnicodeDecodeError) as exc:
            raise RootFSError(ErrorId.ErrRecord, f"cannot read record {path}: {exc}", cause=exc) from exc
        finally:
            if fd != journal:
                os.close(fd)

    def delete(self, instance_id: str) -> None:
        claim = self._claims.get(instance_id)
        if claim is not None:
            claim.set_journal(None)  # never read back what is gone
        unlink_if_present(self.record_path(instance_id))

    def sweep_temporaries(self) -> list[str]:
        """Delete the temporary files of processes that died while writing one
        (their names carry the writer's pid); return their paths."""
        swept = []
        for directory in (self.records_dir, self.incomplete_dir):
            for name in _listdir(directory):
                match = _TEMP.match(name)
                if match and not pid_alive(int(match.group(1))):
                    unlink_if_present(os.path.join(directory, name))
                    swept.append(os.path.join(directory, name))
        return swept

    def ids(self) -> list[str]:
        return sorted(
            name[:-5]
            for name in _listdir(self.records_dir)
            if name.endswith(".json") and is_instance_id(name[:-5])
        )

    # markers -----------------------------------------------------------
    def incomplete_ids(self) -> Iterator[str]:
        for name in _listdir(self.incomplete_dir):
            if is_instance_id(name):
                yield name

    def is_incomplete(self, instance_id: str) -> bool:
        return os.path.exists(self._marker(instance_id))

    def _marker(self, instance_id: str) -> str:
        return os.path.join(self.incomplete_dir, instance_id)

    def claim(self, instance_id: str) -> Claim:
        """Mark the instance incomplete and hold it exclusively, waiting for
        any other holder.

        With no marker yet (the usual remove), the record's own file is
        locked and linked in as the marker: born locked, like every marker,
        and then appended to and read through the lock's descriptor. Linked
        through ``/proc/self/fd``, so the marker is exactly the inode locked
        (a record replaced meanwhile cannot be linked: it has no name left).
        Where that cannot be done (no record, or not one to trust, or no
        ``/proc``), an empty marker of its own is made instead."""
        marker = self._marker(instance_id)
        while True:
            fd = self._open_record(instance_id)
            separate = fd is None
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)  # a holder whose marker it is: wait for it
                    # A dir fd makes os.link call linkat, the one way to ask
                    # for AT_SYMLINK_FOLLOW; with an absolute path the kernel
                    # ignores it.
                    os.link(f"/proc/self/fd/{fd}", marker, src_dir_fd=fd, follow_symlinks=True)
                except FileExistsError:
                    os.close(fd)  # marked already: wait for that holder, below
                except OSError:
                    os.close(fd)
                    separate = True
                except BaseException:  # interrupted while waiting
                    os.close(fd)
                    raise
                else:
                    return Claim(instance_id, marker, fd, self._claims, is_record=True)
            claim = self._lock_marker(instance_id, wait=True)
            if claim is not None:
                return claim
            if not separate:
                continue  # the marker went meanwhile: start again
            try:
                # Born locked: the marker appears only once flock is held,
                # so no sweeper ever finds it unlocked and thinks its owner
                # dead.
                return Claim(instance_id, marker, self._born_locked(b"", [marker]), self._claims)
            except FileExistsError:
                continue  # someone marked it meanwhile: wait for them
            except OSError as exc:
                raise RootFSError(ErrorId.ErrRecord, f"cannot create marker {marker}", cause=exc) from exc

    def claim_abandoned(self, instance_id: str) -> Claim | None:
        """Hold an incomplete instance whose owner is gone, or return None if a
        live process holds it or it is no longer incomplete."""
        return self._lock_marker(instance_id, wait=False)

    def _lock_marker(self, instance_id: str, *, wait: bool) -> Claim | None:
        """Hold the instance's marker, if there is one (None if there is
        none, or, unless ``wait``, if a live process holds it)."""
        marker = self._marker(instance_id)
        try:
            fd = os.open(marker, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            # The previous holder may have finished (and unlinked the marker)
            # while we waited: then our lock is on an inode that is no marker
            # any more, whether or not it is still the record.
            locked, named = os.fstat(fd), os.stat(marker, follow_symlinks=False)
        except BaseException as exc:  # an interrupt while waiting too
            os.close(fd)
            if isinstance(exc, OSError) and exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.ENOENT):
                return None
            raise
        if (locked.st_dev, locked.st_ino) != (named.st_dev, named.st_ino):
            os.close(fd)
            return None
        return Claim(instance_id, marker, fd, self._claims)

    def _open_record(self, instance_id: str) -> int | None:
        """The record's file, open for appending, if it is one of the caller's
        that can be its marker; else None."""
        try:
            fd = os.open(
                self.record_path(instance_id), os.O_RDWR | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
            )
        except OSError:
            return None
        try:
            if untrusted(os.fstat(fd), directory=False) is None:
                return fd
        except OSError:
            pass
        os.close(fd)
        return None

    # files appearing whole -------------------------------------------------
    def _temp_name(self, path: str) -> str:
        directory, name = os.path.split(path)
        return os.path.join(directory, f".{name}.{os.getpid()}.{os.urandom(4).hex()}.new")

    def _born_locked(self, content: bytes, names: list[str]) -> int:
        """A new file holding ``content``, flock held on it, linked in under
        each of ``names`` in turn (all or none of them): it appears whole,
        and never unlocked while we live. Made under a temporary name beside
        the first, which is deleted whatever happens (a kill leaves it for
        ``sweep_temporaries``); the state directory is made the first time.
        Returns the open fd. Raises ``FileExistsError`` if a name exists."""
        tmp = self._temp_name(names[0])
        try:
            fd = os.open(tmp, _NEW_FILE, 0o600)
        except FileNotFoundError:
            self.ensure()
            fd = os.open(tmp, _NEW_FILE, 0o600)
        linked: list[str] = []
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if content:
                os.write(fd, content)
            for name in names:
                os.link(tmp, name)
                linked.append(name)
        except BaseException:
            for name in linked:
                unlink_if_present(name)
            os.close(fd)
            raise
        finally:
            unlink_if_present(tmp)
        return fd


# A record or marker under its temporary name (appended to once in place).
_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
_TEMP = re.compile(r"^\..*\.([0-9]+)\.[0-9a-f]{8}\.new$")


def untrusted(st: os.stat_result, *, directory: bool = True) -> str | None:
    """Why a file or directory with this ``lstat`` is not the caller's alone,
    or None if it is."""
    if directory and not stat.S_ISDIR(st.st_mode):
        return "is not a directory (a symlink?)"
    if not directory and not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if st.st_uid != os.geteuid():
        return f"is owned by uid {st.st_uid}"
    if st.st_mode & 0o022:
        return f"is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _listdir(path: str) -> list[str]:
    """The names in ``path``; none if it does not exist (not initialised)."""
    try:
        return os.listdir(path)
    except FileNotFoundError:
        return []


def unlink_if_present(path: str) -> None:
    """Delete a file; one already gone is no error."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
