"""rootfs: disposable writable container roots from one read-only prototype.

    from rootfs_core import RootFS
    rfs = RootFS("/var/lib/rootfs")
    root = rfs.generate("/srv/prototypes/debian")
    ...
    rfs.remove(root)

Names are imported lazily so that ``import rootfs_core`` (and the CLI's
start-up) costs nothing until they are used; so is ``__version__``, read
from the installed distribution's metadata on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rootfs_core.core import BackendStatus, Instance, RootFS
    from rootfs_core.errors import ErrorId, ImplErrorId, RootFSError
    from rootfs_core.sweep import GcReport

    __version__: str

__all__ = ["BackendStatus", "ErrorId", "GcReport", "ImplErrorId", "Instance", "RootFS", "RootFSError"]

_WHERE = {
    "RootFS": "rootfs_core.core",
    "Instance": "rootfs_core.core",
    "BackendStatus": "rootfs_core.core",
    "GcReport": "rootfs_core.sweep",
    "ErrorId": "rootfs_core.errors",
    "ImplErrorId": "rootfs_core.errors",
    "RootFSError": "rootfs_core.errors",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        return _version()
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'rootfs_core' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


def _version() -> str:
    """rootfs-core's version, as installed (remembered once read)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("rootfs-core")
    except PackageNotFoundError:  # imported from a source tree that was never installed
        found = "0+unknown"
    globals()["__version__"] = found
    return found
