"""Finding the installed backends, and calling one of them.

stevedore loads the entry-point group ``rootfs.backends``: a plugin that fails
to import is recorded with its error and skipped, so one broken distribution
never hides the others (pluggy's own loader stops at the first failure).
pluggy then registers each loaded plugin, which validates its hooks against
``hookspecs.BackendSpec``, and calls them. A plugin that fails validation, or
describes itself wrongly, is recorded as broken too.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import pluggy

from rootfs_core import hookspecs
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.hookspecs import BackendInfo

log = logging.getLogger("rootfs")

ENTRY_POINT_GROUP = "rootfs.backends"
_REQUIRED_HOOKS = ("rootfs_backend_info", "rootfs_probe", "rootfs_generate")


@dataclasses.dataclass
class Backend:
    """An entry point of the group, loaded or not."""

    name: str
    target: str  # "module:attr" the entry point names
    info: BackendInfo | None = None  # None when broken
    error: str | None = None  # why it could not be loaded


class Registry:
    """The backends of this environment, by name."""

    def __init__(
        self, plugins: Mapping[str, tuple[str, object]], broken: Mapping[str, tuple[str, str]]
    ) -> None:
        """``plugins``: name -> (target, loaded object); ``broken``: name -> (target, error)."""
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs.BackendSpec)
        self._plugins: dict[str, object] = {}
        self._callers: dict[tuple[str, str], Any] = {}
        self.backends: dict[str, Backend] = {}
        for name, (target, error) in broken.items():
            self.backends[name] = Backend(name, target, error=error)
        for name, (target, plugin) in plugins.items():
            self.backends[name] = self._register(name, target, plugin)

    @classmethod
    def discover(cls) -> Registry:
        """Load every entry point of the group, isolating failures."""
        from stevedore import ExtensionManager  # costs ~20 ms: only when needed

        broken: dict[str, tuple[str, str]] = {}

        def failed(_mgr: object, entry_point: Any, exc: BaseException) -> None:
            broken[entry_point.name] = (entry_point.value, f"{type(exc).__name__}: {exc}")
            log.info("backend %s failed to load: %s", entry_point.name, exc)

        # stevedore keeps the group's entry points for the life of the process;
        # a long-running caller that installs a backend must see it on its next
        # RootFS, so each discovery starts from the installed metadata.
        ExtensionManager.ENTRY_POINT_CACHE.pop(ENTRY_POINT_GROUP, None)
        manager: Any = ExtensionManager(ENTRY_POINT_GROUP, on_load_failure_callback=failed)
        plugins = {ext.name: (ext.entry_point_target, ext.plugin) for ext in manager}
        return cls(plugins, broken)

    def _register(self, name: str, target: str, plugin: object) -> Backend:
        try:
            self._pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            return Backend(name, target, error=f"invalid hooks: {exc}")
        implemented = {impl.name for impl in self._pm.get_hookcallers(plugin) or []}
        missing = [hook for hook in _REQUIRED_HOOKS if hook not in implemented]
        self._plugins[name] = plugin
        if missing:
            return Backend(name, target, error=f"missing hooks: {', '.join(missing)}")
        try:
            info = self.call(name, "rootfs_backend_info")
        except Exception as exc:  # a plugin's bug must not break discovery
            return Backend(name, target, error=f"rootfs_backend_info failed: {exc!r}")
        if not isinstance(info, BackendInfo) or info.priority not in hookspecs.PRIORITY_RANGE:
            return Backend(
                name,
                target,
                error=f"rootfs_backend_info must return a BackendInfo with a priority in "
                f"{hookspecs.PRIORITY_RANGE.start}..{hookspecs.PRIORITY_RANGE.stop - 1}, got {info!r}",
            )
        return Backend(name, target, info=info)

    def get(self, name: str) -> Backend:
        """The usable backend of that name, or an ``ErrUnknownBackend`` error."""
        backend = self.backends.get(name)
        if backend is None:
            known = ", ".join(sorted(self.backends)) or "none"
            raise RootFSError(
                ErrorId.ErrUnknownBackend, f"no backend named {name!r} is installed (installed: {known})"
            )
        if backend.error is not None:
            raise RootFSError(ErrorId.ErrUnknownBackend, f"backend {name!r} is broken: {backend.error}")
        return backend

    def by_priority(self) -> list[Backend]:
        """Usable backends, highest priority first (ties by name, for stability)."""
        usable = [b for b in self.backends.values() if b.info is not None]
        return sorted(usable, key=lambda b: (-b.info.priority if b.info else 0, b.name))

    def call(self, name: str, hook: str, **kwargs: Any) -> Any:
        """Call one hook of one backend only."""
        key = (name, hook)
        caller = self._callers.get(key)
        if caller is None:
            others = [p for n, p in self._plugins.items() if n != name]
            caller = self._pm.subset_hook_caller(hook, remove_plugins=others)
            self._callers[key] = caller
        return caller(**kwargs)


def distributions_by_backend() -> dict[str, str]:
    """Backend name -> the installed distribution that declares its entry point.

    Reads every installed distribution's metadata (tens of milliseconds), so
    only ``rootfs backends`` asks.
    """
    from importlib.metadata import distributions

    found: dict[str, str] = {}
    for dist in distributions():
        for entry_point in dist.entry_points:
            if entry_point.group == ENTRY_POINT_GROUP:
                found.setdefault(entry_point.name, dist.metadata["Name"])
    return found
