"""Which backend to use: the user's choice, or the best one this host supports.

A forced choice comes from, in order, the ``backend`` argument (``--backend``),
the ``ROOTFS_BACKEND`` variable, or ``backend = "..."`` in the configuration
file (``/etc/rootfs/config.toml``, or the path in ``ROOTFS_CONFIG``). A forced
backend is still probed, so it fails with its reason instead of half-way
through a mount. Successful probe verdicts are cached per backend,
base-directory filesystem and user under ``/run`` and keyed by the boot id,
so a reboot (or a new kernel) always re-probes.
"""

from __future__ import annotations

import json
import os

from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.hookspecs import Probe

DEFAULT_CONFIG = "/etc/rootfs/config.toml"
_CONFIG_KEYS = {"backend", "base_dir"}


def load_config() -> dict[str, str]:
    """The configuration file's settings; a missing file means none."""
    path = os.environ.get("ROOTFS_CONFIG", DEFAULT_CONFIG)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        return {}  # the usual case: skip even importing the TOML parser
    except OSError as exc:
        raise RootFSError(ErrorId.ErrConfig, f"cannot read configuration {path}", cause=exc) from exc
    import tomllib

    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RootFSError(ErrorId.ErrConfig, f"cannot read configuration {path}", cause=exc) from exc
    unknown = set(data) - _CONFIG_KEYS
    if unknown:
        raise RootFSError(ErrorId.ErrConfig, f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    bad = [k for k, v in data.items() if not isinstance(v, str)]
    if bad:
        raise RootFSError(ErrorId.ErrConfig, f"{path}: setting(s) {', '.join(bad)} must be strings")
    return data


def forced_backend(explicit: str | None) -> str | None:
    """The backend the user insists on, if any."""
    if explicit:
        return explicit
    return os.environ.get("ROOTFS_BACKEND") or load_config().get("backend") or None


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown"


def cache_dir(kind: str) -> str | None:
    """Where rootfs keeps a cache of ``kind`` (``probes``, ``entry-points``):
    under ``ROOTFS_CACHE`` if set ("" turns caching off), else ``/run/rootfs``
    for root or ``$XDG_RUNTIME_DIR/rootfs``: places a reboot empties."""
    configured = os.environ.get("ROOTFS_CACHE")
    if configured is not None:
        return os.path.join(configured, kind) if configured else None
    if os.geteuid() == 0:
        return os.path.join("/run/rootfs", kind)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "rootfs", kind) if runtime else None


class ProbeCache:
    """Probe verdicts that survive the process but not a reboot."""

    def __init__(self) -> None:
        self.directory = cache_dir("probes")

    def _path(self, name: str, base_dir: str) -> str | None:
        if self.directory is None:
            return None
        return os.path.join(self.directory, f"{name}-{os.stat(base_dir).st_dev}-{os.geteuid()}.json")

    def get(self, name: str, target: str, base_dir: str) -> Probe | None:
        path = self._path(name, base_dir)
        if path is None:
            return None
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError):
            return None
        if data.get("boot_id") != _boot_id() or data.get("target") != target:
            return None
        return Probe(bool(data["supported"]), data.get("reason"))

    def put(self, name: str, target: str, base_dir: str, probe: Probe) -> None:
        path = self._path(name, base_dir)
        if path is None:
            return
        try:
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(
                    {
                        "boot_id": _boot_id(),
                        "target": target,
                        "supported": probe.supported,
                        "reason": probe.reason,
                    },
                    fh,
                )
            os.replace(tmp, path)
        except OSError:
            pass  # a cache that cannot be written only costs a re-probe
