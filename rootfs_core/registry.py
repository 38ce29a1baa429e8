"""Finding the installed backends, and calling one of them.

stevedore lists the entry-point group ``rootfs.backends`` (remembered between
commands until the environment changes); each plugin is then imported on its
own: one that fails to import is recorded with its error and skipped, so one
broken distribution never hides the others (pluggy's own loader stops at the
first failure).
pluggy then registers each loaded plugin, which validates its hooks against
``hookspecs.BackendSpec``, and calls them. A plugin that fails validation,
has a ``rootfs_*`` function that would never be called (a misspelt hook,
which pluggy accepts, or one without ``@hookimpl``, which it ignores), or
describes itself wrongly, is recorded as broken too.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys
import types
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

import pluggy

from rootfs_core import hookspecs, log
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.hookspecs import BackendInfo
from rootfs_core.selection import CacheDir

if TYPE_CHECKING:
    from rootfs_core.context import BuildContext, RemoveContext

ENTRY_POINT_GROUP = "rootfs.backends"
_REQUIRED_HOOKS = ("rootfs_backend_info", "rootfs_probe", "rootfs_generate")


@dataclasses.dataclass
class Backend:
    """An entry point of the group, loaded or not."""

    name: str
    target: str  # "module:attr" the entry point names
    info: BackendInfo | None = None  # None when broken
    error: str | None = None  # why it could not be loaded
    # Its distribution's version ("" when unknown): an upgrade must not
    # inherit the old code's remembered probe verdict.
    version: str = ""


class Registry:
    """The backends of this environment, by name."""

    def __init__(
        self,
        plugins: Mapping[str, tuple[str, object]],
        broken: Mapping[str, tuple[str, str]],
        versions: Mapping[str, str] | None = None,
    ) -> None:
        """``plugins``: name -> (target, loaded object); ``broken``: name ->
        (target, error); ``versions``: name -> its distribution's version."""
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs.BackendSpec)
        self._plugins: dict[str, object] = {}
        self._callers: dict[tuple[str, str], Any] = {}
        self.backends: dict[str, Backend] = {}
        for name, (target, error) in broken.items():
            self.backends[name] = Backend(name, target, error=error)
        for name, (target, plugin) in plugins.items():
            self.backends[name] = self._register(name, target, plugin)
        for name, version in (versions or {}).items():
            if name in self.backends:
                self.backends[name].version = version

    @classmethod
    def discover(cls) -> Registry:
        """Load every entry point of the group, isolating failures.

        The group's entry points are remembered (``EntryPointCache``), so a
        command pays for scanning installed metadata only after something
        was installed or removed; loading and isolating them is done anew
        each time either way.
        """
        cache = EntryPointCache()
        remembered = cache.get()
        if remembered is None:
            plugins, broken, versions = _load_with_stevedore()
            cache.put({name: target for name, (target, _) in (plugins | broken).items()}, versions)
            return cls(plugins, broken, versions)
        targets, versions = remembered
        plugins, broken = {}, {}
        for name, target in targets.items():
            try:
                plugins[name] = (target, _load(target))
            except Exception as exc:  # a broken plugin must not break the others
                broken[name] = _failure(name, target, exc)
        return cls(plugins, broken, versions)

    def _register(self, name: str, target: str, plugin: object) -> Backend:
        try:
            self._pm.register(plugin, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            return Backend(name, target, error=f"invalid hooks: {exc}")
        unknown = self._unknown_hooks(plugin)
        if unknown:
            # Unregistered, so it is never called and no hook caller keeps it.
            self._pm.unregister(plugin)
            return Backend(name, target, error=unknown)
        implemented = {impl.name for impl in self._pm.get_hookcallers(plugin) or []}
        missing = [hook for hook in _REQUIRED_HOOKS if hook not in implemented]
        self._plugins[name] = plugin
        if missing:
            return Backend(name, target, error=f"missing hooks: {', '.join(missing)}")
        try:
            info = self.backend_info(name)
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

    def _unknown_hooks(self, plugin: object) -> str | None:
        """Why ``plugin`` has a ``rootfs_*`` function that would never be
        called (None: it has none), as pluggy's ``check_pending`` would say
        and more: a misspelt optional hook (``rootfs_remov``) is accepted by
        pluggy's ``register`` and then silently skipped, and so is a hook
        whose name is right but which lacks ``@hookimpl``. Both would leave
        undone what the backend meant to do (release a helper, say), so the
        backend is reported broken instead. An implementation marked
        ``@hookimpl(optionalhook=True)`` may name a hook this core lacks (one
        of a newer core), as in pluggy."""
        specs = {n for n in dir(hookspecs.BackendSpec) if n.startswith(hookspecs.PROJECT + "_")}
        registered = {impl.name for impl in self._pm.get_hookcallers(plugin) or []}
        problems = []
        for attr in sorted(dir(plugin)):
            if not attr.startswith(hookspecs.PROJECT + "_"):
                continue
            try:
                value = getattr(plugin, attr)
            except Exception:  # a property that fails is no hook
                continue
            if isinstance(value, types.ModuleType) or not callable(value):
                continue  # ``import rootfs_core`` in a backend module, say
            opts = self._pm.parse_hookimpl_opts(plugin, attr)
            if attr not in specs:
                if opts is not None and opts.get("optionalhook"):
                    continue
                import difflib  # only for a misspelt hook

                close = difflib.get_close_matches(attr, sorted(specs), n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                problems.append(f"unknown hook {attr}{hint}")
            elif attr not in registered:
                problems.append(f"{attr} is not marked @hookimpl")
        if not problems:
            return None
        return f"{'; '.join(problems)}: hooks are {', '.join(sorted(specs))}"

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

    # One typed method per hook, so a caller cannot misspell a hook's name
    # or its arguments, and gets the hook's own return type.
    def backend_info(self, name: str) -> object:
        """What backend ``name`` says of itself (checked by ``_register``)."""
        return self._call(name, "rootfs_backend_info")

    def probe(self, name: str, ctx: BuildContext) -> object:
        """Backend ``name``'s probe verdict (a ``Probe`` unless it is buggy:
        the caller checks)."""
        return self._call(name, "rootfs_probe", ctx=ctx)

    def generate(self, name: str, ctx: BuildContext) -> None:
        """Backend ``name``'s mount plan, through ``ctx``."""
        self._call(name, "rootfs_generate", ctx=ctx)

    def remove(self, name: str, ctx: RemoveContext) -> None:
        """Backend ``name``'s optional remove hook (nothing if it has none)."""
        self._call(name, "rootfs_remove", ctx=ctx)

    def _call(self, name: str, hook: str, **kwargs: object) -> Any:
        """Call one hook of one backend only (pluggy would call it on every
        registered plugin)."""
        key = (name, hook)
        caller = self._callers.get(key)
        if caller is None:
            others = [p for n, p in self._plugins.items() if n != name]
            caller = self._pm.subset_hook_caller(hook, remove_plugins=others)
            self._callers[key] = caller
        return caller(**kwargs)


def _load_with_stevedore() -> tuple[
    dict[str, tuple[str, object]], dict[str, tuple[str, str]], dict[str, str]
]:
    """Scan the installed metadata and load every plugin of the group:
    ``(loaded, broken, versions)``."""
    from stevedore import ExtensionManager  # with importlib.metadata, ~30 ms: only on a cache miss

    broken: dict[str, tuple[str, str]] = {}

    def failed(_mgr: object, entry_point: Any, exc: BaseException) -> None:
        broken[entry_point.name] = _failure(entry_point.name, entry_point.value, exc)

    # stevedore keeps a group's entry points for the life of the process; a
    # long-running caller that installs a backend must see it on its next
    # RootFS, so each scan starts from the installed metadata.
    ExtensionManager.ENTRY_POINT_CACHE.pop(ENTRY_POINT_GROUP, None)
    manager: Any = ExtensionManager(ENTRY_POINT_GROUP, on_load_failure_callback=failed)
    # stevedore's entry points may come from its own cache, which does not
    # keep their distribution: the versions come from the metadata itself.
    versions = {name: version for name, (_, version) in _declared_by().items()}
    return {ext.name: (ext.entry_point_target, ext.plugin) for ext in manager}, broken, versions


def _failure(name: str, target: str, exc: BaseException) -> tuple[str, str]:
    log.info("backend %s failed to load: %s", name, exc)
    return target, f"{type(exc).__name__}: {exc}"


def _load(target: str) -> object:
    """Import what an entry point names, as importlib.metadata would."""
    module_name, _, attrs = target.partition(":")
    obj: object = importlib.import_module(module_name.strip())
    for attr in filter(None, attrs.strip().split(".")):
        obj = getattr(obj, attr)
    return obj


class EntryPointCache:
    """The group's entry points, remembered until the environment changes.

    Valid while ``sys.path`` lists the same directories with the same
    modification times: installing or removing a distribution adds or
    deletes a ``*.dist-info`` directory, which changes its directory's time.
    Kept where the probe verdicts are, and trusted on the same terms
    (``selection.CacheDir``): a file another user could have written would
    choose the modules this process imports.
    """

    def __init__(self) -> None:
        self._files = CacheDir("entry-points")
        # One file per environment (its sys.path), so that calls from two
        # environments (two venvs, ``python -m cProfile``, a script
        # elsewhere) never evict each other's entry points.
        # crc32, not a cryptographic hash: zlib costs nothing to import, and
        # the file's key (every sys.path entry) still decides whether it holds.
        environment = zlib.crc32("\0".join(sys.path).encode(errors="surrogateescape"))
        self._name = f"{os.geteuid()}-{environment:08x}.json"
        self.path = os.path.join(self._files.path, self._name) if self._files.path else None

    @staticmethod
    def _key() -> list[list[object]]:
        key: list[list[object]] = []
        for entry in sys.path:
            try:
                key.append([entry, os.stat(entry or ".").st_mtime_ns])
            except OSError:
                key.append([entry, None])
        return key

    def get(self) -> tuple[dict[str, str], dict[str, str]] | None:
        """``(targets, versions)`` by backend name, if remembered for this
        environment as it is now."""
        raw = self._files.read(self._name)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict) or data.get("key") != self._key():
            return None
        targets, versions = data.get("targets"), data.get("versions")
        if not (_names_to_text(targets) and _names_to_text(versions)):
            return None
        return targets, versions

    def put(self, targets: dict[str, str], versions: dict[str, str]) -> None:
        if self._files.root is None:
            return
        data = {"key": self._key(), "targets": targets, "versions": versions}
        self._files.write(self._name, json.dumps(data).encode())


def _names_to_text(table: object) -> TypeGuard[dict[str, str]]:
    return isinstance(table, dict) and all(isinstance(v, str) for v in table.values())


def distributions_by_backend() -> dict[str, str]:
    """Backend name -> the installed distribution that declares its entry point.

    Reads every installed distribution's metadata (tens of milliseconds), so
    only ``rootfs backends`` and a scan after an install ask.
    """
    return {name: dist for name, (dist, _) in _declared_by().items()}


def _declared_by() -> dict[str, tuple[str, str]]:
    """Backend name -> (distribution, version) declaring its entry point."""
    from importlib.metadata import distributions

    found: dict[str, tuple[str, str]] = {}
    for dist in distributions():
        for entry_point in dist.entry_points:
            if entry_point.group == ENTRY_POINT_GROUP:
                found.setdefault(entry_point.name, (dist.metadata["Name"], dist.version))
    return found
