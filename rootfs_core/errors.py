"""The one exception type rootfs raises, and the ids that say what went wrong.

The ids keep the names of the Go package rootfs descends from, so that logs,
scripts and documentation written against the seed still match. ``ErrorId``
holds the seed's operation ids followed by the ones this project adds;
``ImplErrorId`` holds the seed's constructor ids. Callers branch on
``err.error_id``, never on message text.
"""

from __future__ import annotations

import enum


class ErrorId(enum.Enum):
    """What an operation was doing when it failed."""

    # The seed's ids, in the seed's order.
    ErrCreateTempDir = enum.auto()  # the instance's writable directory could not be created
    ErrCreateMountDir = enum.auto()  # the directory the root is mounted on could not be created
    ErrBindMountRoot = enum.auto()  # the root could not be mounted
    ErrBindMountSubdir = enum.auto()  # a writable directory could not be mounted over the root's
    ErrRootSubdirMissing = enum.auto()  # a directory the backend needs is missing in the prototype
    ErrUnmountSubdir = enum.auto()  # a mount below the root could not be unmounted
    ErrOverlayTempDir = enum.auto()  # the instance's tmp could not be made
    ErrOverlayDir = enum.auto()  # a writable copy of a prototype directory could not be made
    ErrRemoveMountDir = enum.auto()  # a directory of the instance could not be deleted
    ErrUnmountRoot = enum.auto()  # the root could not be unmounted

    # Added by this project.
    ErrNoSupportedBackend = enum.auto()  # no installed backend works on this host
    ErrUnknownBackend = enum.auto()  # the named backend is not installed (or failed to load)
    ErrBackendUnsupported = enum.auto()  # the named backend is installed but cannot work here
    ErrBackendFailed = enum.auto()  # a backend broke its contract (raised something unexpected)
    ErrBadOption = enum.auto()  # an option the backend does not accept, or a bad value
    ErrPrototypeMissing = enum.auto()  # the prototype does not exist
    ErrPrototypeNotDir = enum.auto()  # the prototype is not a directory
    ErrPrototypeOverlapsBase = enum.auto()  # prototype and base directory contain one another
    ErrNotOurRoot = enum.auto()  # remove was asked for a path this base directory did not make
    ErrPathEscapesRoot = enum.auto()  # a path inside the prototype leads out of the root
    ErrRootBusy = enum.auto()  # the root is still in use by a process
    ErrRecord = enum.auto()  # the instance record could not be read or written
    ErrConfig = enum.auto()  # the configuration file is unreadable or invalid
    ErrNotBaseDir = enum.auto()  # the directory is not a base directory rootfs initialised
    ErrNoSuchRoot = enum.auto()  # no instance has that id or root (never made, or removed)
    ErrUnsupportedRequest = enum.auto()  # the backend cannot serve it (layers, read-only)
    ErrCommit = enum.auto()  # the layer of a commit could not be made
    ErrLayerDest = enum.auto()  # a commit's destination is refused (exists, no parent, inside a layer)
    ErrNoSuchLayer = enum.auto()  # no stored layer has that id
    ErrLayerInUse = enum.auto()  # a stored layer an instance still uses cannot be removed
    ErrLayerLost = enum.auto()  # an instance's writable layer is gone (a tmpfs a reboot emptied)


class ImplErrorId(enum.Enum):
    """Why a RootFS could not be constructed (the seed's ``ImplErrorId``)."""

    ErrNilSyscallFS = enum.auto()  # no usable syscall implementation was given
    ErrRwBaseDirMissing = enum.auto()  # the read-write base directory was not found
    ErrRwBaseDirIsFile = enum.auto()  # a file was found instead of the base directory
    ErrRwBaseDirNotRw = enum.auto()  # the base directory lacks read and write permission
    ErrRwBaseDirUnsafe = enum.auto()  # the base directory is not the caller's alone (added)


class RootFSError(Exception):
    """A failure with an id that says which step failed.

    ``cause`` is the underlying exception (usually an ``OSError``): it is
    ``__cause__``, set by the constructor so that an error made without
    ``raise ... from`` still names it, and by ``raise ... from`` otherwise;
    one attribute, not two that could disagree. ``cleanup_errors`` lists
    what went wrong while undoing a failed operation: when it is non-empty,
    something may be left behind and ``rootfs gc`` should be run once the
    cause is fixed.
    """

    def __init__(
        self,
        error_id: ErrorId | ImplErrorId,
        message: str,
        *,
        cause: BaseException | None = None,
    ) -> None:
        super().__init__(message)
        self.error_id = error_id
        self.message = message
        self.__cause__ = cause
        self.cleanup_errors: list[RootFSError] = []

    @property
    def cause(self) -> BaseException | None:
        """The underlying exception (``__cause__``)."""
        return self.__cause__

    def __repr__(self) -> str:
        return f"RootFSError({self.error_id}, {self.message!r})"

    def __str__(self) -> str:
        text = f"{self.error_id.name}: {self.message}"
        if self.cause is not None:
            text += f" ({self.cause})"
        for err in self.cleanup_errors:
            text += f"; while cleaning up: {err}"
        return text
