"""The layer store of a base directory: layers ``commit`` made, by id.

Layout under the base directory::

    .rootfs/layers/<id>/                  a finished layer (overlay's format), read-only input
    .rootfs/layers/<id>.json              when and from what it was made (optional: a layer
                                          whose description is lost is still listed)
    .rootfs/layers/.tmp-<id>.<pid>/       a commit at work (staged copies; a layer being
                                          copied in): deleted by ``gc`` once <pid> is dead

A layer appears under its id by one rename, finished, so a reader or a
crash never meets a half-written one under that name. Which instances use a
layer is read from the records (an instance records the real path of each of
its layers), so it cannot drift from them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from typing import TYPE_CHECKING

from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.files import replace_file
from rootfs_core.store import STATE_DIR, is_instance_id, pid_alive, unlink_if_present, untrusted

if TYPE_CHECKING:
    from rootfs_core.core import RootFS

LAYERS_DIR = "layers"
_TEMP = re.compile(r"^\.tmp-([0-9a-f]{12})\.([0-9]+)$")


@dataclasses.dataclass(frozen=True)
class Layer:
    """One stored layer, as ``RootFS.layers()`` reports it."""

    id: str
    path: str
    bytes: int
    inodes: int
    created: float
    instances: list[str] = dataclasses.field(default_factory=list)  # ids of instances using it


class LayerStore:
    """The stored layers of one base directory (made on first use)."""

    def __init__(self, base_dir: str) -> None:
        self.base_dir = base_dir
        self.dir = os.path.join(base_dir, STATE_DIR, LAYERS_DIR)

    # paths ------------------------------------------------------------------
    def path(self, layer_id: str) -> str:
        return os.path.join(self.dir, layer_id)

    def meta_path(self, layer_id: str) -> str:
        return os.path.join(self.dir, layer_id + ".json")

    def id_of(self, path: str) -> str | None:
        """The id of the stored layer at ``path`` (a real path), or None."""
        parent, name = os.path.split(os.path.normpath(path))
        if parent == self.dir and is_instance_id(name) and os.path.isdir(path):
            return name
        return None

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if is_instance_id(n) and os.path.isdir(self.path(n)))

    def resolve(self, text: str) -> str | None:
        """The path of the stored layer ``text`` names by id, or None."""
        if is_instance_id(text) and os.path.isdir(self.path(text)):
            return self.path(text)
        return None

    # making -------------------------------------------------------------------
    def ensure(self) -> None:
        """Create the store directory (the state directory exists by then)."""
        try:
            os.mkdir(self.dir, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise RootFSError(ErrorId.ErrRecord, f"cannot create {self.dir}", cause=exc) from exc
        problem = untrusted(os.lstat(self.dir))
        if problem:
            raise RootFSError(ErrorId.ErrRecord, f"layer store {self.dir} {problem}: refusing to use it")

    def new_id(self) -> str:
        while True:
            candidate = os.urandom(6).hex()
            if not os.path.lexists(self.path(candidate)):
                return candidate

    def temp_path(self, layer_id: str) -> str:
        """Where a commit making ``layer_id`` works (this process's, for ``gc``)."""
        return os.path.join(self.dir, f".tmp-{layer_id}.{os.getpid()}")

    def write_meta(self, layer_id: str, meta: dict[str, object]) -> None:
        """The layer's description, appearing whole (temporary name, then rename)."""
        path = self.meta_path(layer_id)
        try:
            replace_file(path, json.dumps(meta).encode(), mode=0o644)
        except OSError as exc:
            raise RootFSError(ErrorId.ErrRecord, f"cannot write {path}", cause=exc) from exc

    def read_meta(self, layer_id: str) -> dict[str, object]:
        try:
            with open(self.meta_path(layer_id), encoding="utf-8") as fh:
                meta = json.load(fh)
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    def created(self, layer_id: str) -> float:
        value = self.read_meta(layer_id).get("created")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        try:
            return os.lstat(self.path(layer_id)).st_ctime  # the rename that published it
        except OSError:
            return 0.0

    # gc ---------------------------------------------------------------------
    def stray_temporaries(self) -> list[str]:
        """Work directories of commits whose process is dead, and
        descriptions whose layer is gone (a crash between the two)."""
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        stray = []
        for name in sorted(names):
            match = _TEMP.match(name)
            if match and not pid_alive(int(match.group(2))):
                stray.append(os.path.join(self.dir, name))
            elif name.endswith(".json") and is_instance_id(name[:-5]):
                if not os.path.lexists(self.path(name[:-5])) and _old(os.path.join(self.dir, name)):
                    stray.append(os.path.join(self.dir, name))
            elif name.endswith(".tmp") and ".json." in name:
                pid = name.rsplit(".", 2)[-2]
                if pid.isdigit() and not pid_alive(int(pid)):
                    stray.append(os.path.join(self.dir, name))
        return stray


def users(rfs: RootFS) -> dict[str, list[str]]:
    """Layer path -> ids of the instances whose record names it (a damaged
    record counts for nothing: ``remove`` sweeps it)."""
    found: dict[str, list[str]] = {}
    for instance_id in rfs._store.ids():
        try:
            record = rfs._store.read(instance_id)
        except RootFSError:
            continue
        if record is not None:
            for layer in set(record.layers):
                found.setdefault(layer, []).append(instance_id)
    return found


def list_layers(rfs: RootFS) -> list[Layer]:
    """``RootFS.layers``: every stored layer, oldest first."""
    from rootfs_core.usage import measure

    store = LayerStore(rfs.base_dir)
    using = users(rfs)
    found = []
    for layer_id in store.ids():
        path = store.path(layer_id)
        size, inodes = measure([path])
        found.append(
            Layer(layer_id, path, size, inodes, store.created(layer_id), sorted(using.get(path, [])))
        )
    return sorted(found, key=lambda layer: (layer.created, layer.id))


def remove_layer(rfs: RootFS, layer_id: str) -> None:
    """``RootFS.remove_layer``: refused while an instance uses the layer."""
    store = LayerStore(rfs.base_dir)
    if not is_instance_id(layer_id) or not os.path.isdir(store.path(layer_id)):
        raise RootFSError(ErrorId.ErrNoSuchLayer, f"no stored layer {layer_id!r} in {rfs.base_dir}")
    path = store.path(layer_id)
    # Held like an instance, so a generate cannot start using it meanwhile
    # unseen: a record names its layers before its first mount.
    using = users(rfs).get(path, [])
    if using:
        raise RootFSError(
            ErrorId.ErrLayerInUse,
            f"layer {layer_id} is used by instance(s) {', '.join(sorted(using))}: remove them first; "
            "nothing was touched",
        )
    unlink_if_present(store.meta_path(layer_id))
    try:
        rfs.syscalls.remove_tree(path)
    except OSError as exc:
        raise RootFSError(ErrorId.ErrRemoveMountDir, f"cannot delete layer {path}", cause=exc) from exc


def _old(path: str, seconds: float = 60.0) -> bool:
    """Whether ``path`` is older than a commit's publish takes (a description
    is written just after its layer appears)."""
    try:
        return time.time() - os.lstat(path).st_mtime > seconds
    except OSError:
        return False
    return True
