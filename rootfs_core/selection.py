"""Which backend to use: the user's choice, or the best one this host supports.

A forced choice comes from, in order, the ``backend`` argument (``--backend``),
the ``ROOTFS_BACKEND`` variable, or ``backend = "..."`` in the configuration
file (``/etc/rootfs/config.toml``, or the path in ``ROOTFS_CONFIG``; every
key it may hold is in docs/configuration.md). A forced
backend is still probed, so it fails with its reason instead of half-way
through a mount. Successful probe verdicts are cached per backend,
base-directory filesystem and user under ``/run`` and keyed by the boot id,
so a reboot (or a new kernel) always re-probes. A cache directory another
user could write to is ignored (``CacheDir``): it would let that user choose
root's backend.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import stat
from collections.abc import Callable, Iterable, Sequence

from rootfs_core import log
from rootfs_core.errors import ErrorId, RootFSError
from rootfs_core.files import replace_file
from rootfs_core.hookspecs import BackendInfo, Probe

DEFAULT_CONFIG = "/etc/rootfs/config.toml"
_SETTINGS = ("backend", "base_dir", "cache_dir")  # string settings; "options" is a table of tables
_CONFIG_KEYS = {*_SETTINGS, "options"}
_CONFIG_MAX = 64 * 1024  # a configuration is a few lines: anything bigger is a mistake


@dataclasses.dataclass(frozen=True)
class Config:
    """The configuration file, checked: docs/configuration.md lists its keys."""

    path: str  # the file read (or that would be: a missing file means no settings)
    settings: dict[str, str]  # backend, base_dir, cache_dir, as given
    options: dict[str, dict[str, str]]  # [options.NAME]: backend -> option -> value


def config_path() -> str:
    """``ROOTFS_CONFIG`` ("" counts as unset), else ``/etc/rootfs/config.toml``."""
    return os.environ.get("ROOTFS_CONFIG") or DEFAULT_CONFIG


def read_config() -> Config:
    """The configuration file, checked; a missing file means none.

    Only a regular file of at most 64 KiB is read: a FIFO, a device or a
    directory named by mistake is an ``ErrConfig`` error, never a hang or an
    endless read. Every error names the file, and the key when one is wrong:
    an unknown key, a setting that is not a string, an ``options`` entry
    that is not a table of strings.
    """
    path = config_path()
    raw = _read_config(path)
    if raw is None:
        return Config(path, {}, {})  # the usual case: skip even importing the TOML parser
    import tomllib

    try:
        data = tomllib.loads(raw.decode())
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RootFSError(ErrorId.ErrConfig, f"cannot read configuration {path}", cause=exc) from exc
    unknown = set(data) - _CONFIG_KEYS
    if unknown:
        raise RootFSError(
            ErrorId.ErrConfig,
            f"{path}: unknown setting(s) {', '.join(sorted(unknown))} "
            f"(known: {', '.join(sorted(_CONFIG_KEYS))})",
        )
    bad = [k for k in _SETTINGS if k in data and not isinstance(data[k], str)]
    if bad:
        raise RootFSError(ErrorId.ErrConfig, f"{path}: setting(s) {', '.join(bad)} must be strings")
    tables = data.get("options", {})
    if not isinstance(tables, dict):
        raise RootFSError(
            ErrorId.ErrConfig, f"{path}: options must be tables, one per backend ([options.NAME])"
        )
    options: dict[str, dict[str, str]] = {}
    for backend, table in tables.items():
        if not isinstance(table, dict):
            raise RootFSError(
                ErrorId.ErrConfig, f'{path}: options.{backend} must be a table of KEY = "VALUE" lines'
            )
        bad = [f"options.{backend}.{k}" for k, v in table.items() if not isinstance(v, str)]
        if bad:
            raise RootFSError(ErrorId.ErrConfig, f"{path}: setting(s) {', '.join(bad)} must be strings")
        options[backend] = dict(table)
    return Config(path, {k: data[k] for k in _SETTINGS if k in data}, options)


def load_config() -> dict[str, str]:
    """The configuration file's string settings (``backend``, ``base_dir``,
    ``cache_dir``); a missing file means none. See ``read_config``."""
    return read_config().settings


def default_options(backend: str, accepted: Iterable[str]) -> dict[str, str]:
    """The options the configuration file gives ``backend`` by default
    (``[options.NAME]``), which a caller's own options override. One the
    backend does not accept (``accepted``) is an ``ErrConfig`` error naming
    the key and the file; tables for backends other than ``backend`` are
    not looked at (they need not be installed)."""
    config = read_config()
    table = config.options.get(backend, {})
    known = set(accepted)
    unknown = sorted(set(table) - known)
    if unknown:
        keys = ", ".join(f"options.{backend}.{key}" for key in unknown)
        raise RootFSError(
            ErrorId.ErrConfig,
            f"{config.path}: {keys}: backend {backend!r} has no such option "
            f"(it accepts: {', '.join(sorted(known)) or 'none'})",
        )
    return dict(table)


def _read_config(path: str) -> bytes | None:
    """The file's bytes, or None if it does not exist."""
    # Refused before it is opened: opening some devices has effects of its own.
    try:
        _require_regular(path, os.stat(path).st_mode)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RootFSError(ErrorId.ErrConfig, f"cannot read configuration {path}", cause=exc) from exc
    try:
        # Non-blocking: what was checked may have been swapped for a FIFO since.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RootFSError(ErrorId.ErrConfig, f"cannot read configuration {path}", cause=exc) from exc
    try:
        _require_regular(path, os.fstat(fd).st_mode)
        raw = _read_at_most(fd, _CONFIG_MAX)
    except OSError as exc:
        raise RootFSError(ErrorId.ErrConfig, f"cannot read configuration {path}", cause=exc) from exc
    finally:
        os.close(fd)
    if raw is None:
        raise RootFSError(ErrorId.ErrConfig, f"configuration {path} is larger than {_CONFIG_MAX // 1024} KiB")
    return raw


def _require_regular(path: str, mode: int) -> None:
    if not stat.S_ISREG(mode):
        kinds = {stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket"}
        kind = kinds.get(stat.S_IFMT(mode), "a device")
        raise RootFSError(ErrorId.ErrConfig, f"configuration {path} is not a regular file but {kind}")


def _read_at_most(fd: int, limit: int) -> bytes | None:
    """Up to ``limit`` bytes from ``fd`` until its end; None if there are more."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = os.read(fd, limit + 1 - size)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return None


def forced_backend(explicit: str | None) -> str | None:
    """The backend the user insists on, if any."""
    if explicit:
        return explicit
    return os.environ.get("ROOTFS_BACKEND") or load_config().get("backend") or None  # "" counts as unset


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return "unknown"


def _cache_root() -> str | None:
    """The top directory of every cache, None when caching is off."""
    configured = os.environ.get("ROOTFS_CACHE")
    if configured is None:
        configured = load_config().get("cache_dir")
    if configured is not None:
        return configured or None
    if os.geteuid() == 0:
        return "/run/rootfs"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    return os.path.join(runtime, "rootfs") if runtime else None


def cache_dir(kind: str) -> str | None:
    """Where rootfs keeps a cache of ``kind`` (``probes``, ``entry-points``):
    under ``ROOTFS_CACHE`` if set, else ``cache_dir`` of the configuration
    file if set ("" in either turns caching off), else ``/run/rootfs`` for
    root or ``$XDG_RUNTIME_DIR/rootfs``: places a reboot empties."""
    root = _cache_root()
    return os.path.join(root, kind) if root else None


_CACHE_FILE_MAX = 1024 * 1024
# A descriptor to check (fstat) and to open the next component relative to;
# a symlink is opened as itself, so the check sees it.
_CACHE_DIR_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_CACHE_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY
_distrusted: set[str] = set()  # paths already warned about, to warn once per process


class CacheDir:
    """The files of one cache (``probes``, ``entry-points``), used only if
    no other user can have written them.

    Before a file is read, the cache's top directory (``ROOTFS_CACHE``), its
    ``kind`` directory and the file itself must be owned by the effective
    uid, writable by neither group nor others, and not symlinks. If one is
    not, the cache is ignored (a miss: never read, never written) and one
    warning says which path and why: another user who could write there
    would choose root's backend, or the modules root imports. Each is
    checked with ``fstat`` on a descriptor the next one is opened relative
    to, so what was checked is what is used. Directories the cache creates
    are created 0700.
    """

    def __init__(self, kind: str) -> None:
        self.root = _cache_root()
        self.kind = kind
        self.path = os.path.join(self.root, kind) if self.root else None

    def read(self, name: str) -> bytes | None:
        """The contents of file ``name``, or None: no cache, no such file,
        unreadable, larger than 1 MiB, or untrusted."""
        if not _plain_name(name):
            return None
        directory = self._open_dir(create=False)
        if directory is None:
            return None
        try:
            fd = os.open(name, _CACHE_FILE_FLAGS, dir_fd=directory)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                _distrust(self._shown(name), "it is a symlink")
            return None
        finally:
            os.close(directory)
        try:
            reason = untrusted_reason(os.fstat(fd), stat.S_IFREG)
            if reason is not None:
                _distrust(self._shown(name), reason)
                return None
            return _read_at_most(fd, _CACHE_FILE_MAX)
        except OSError:
            return None
        finally:
            os.close(fd)

    def write(self, name: str, data: bytes) -> None:
        """Replace file ``name`` atomically (mode 0600); do nothing if the
        cache is off or untrusted, or the write fails (a cache that cannot be
        written only costs the work it would have saved)."""
        if not _plain_name(name):
            return
        directory = self._open_dir(create=True)
        if directory is None:
            return
        try:
            replace_file(name, data, dir_fd=directory)
        except OSError:
            pass
        finally:
            os.close(directory)

    def _shown(self, name: str) -> str:
        return os.path.join(self.path or "", name)

    def _open_dir(self, *, create: bool) -> int | None:
        """A descriptor of the ``kind`` directory, if it and the top one are trusted."""
        if self.root is None:
            return None
        top = _open_trusted_dir(self.root, None, self.root, create)
        if top is None:
            return None
        try:
            return _open_trusted_dir(self.kind, top, self._shown(""), create)
        finally:
            os.close(top)


def untrusted_reason(st: os.stat_result, file_type: int) -> str | None:
    """Why what ``st`` describes may hold what another user wrote (None: it
    cannot); ``file_type`` is the ``stat.S_IFMT`` it must have."""
    if stat.S_IFMT(st.st_mode) != file_type:
        if stat.S_ISLNK(st.st_mode):
            return "it is a symlink"
        return "it is not a directory" if file_type == stat.S_IFDIR else "it is not a regular file"
    euid = os.geteuid()
    if st.st_uid != euid:
        return f"it is owned by uid {st.st_uid}, not {euid}"
    if st.st_mode & 0o022:
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _distrust(path: str, reason: str) -> None:
    if path not in _distrusted:
        _distrusted.add(path)
        log.warning("ignoring the untrusted cache %s: %s", path, reason)


def _plain_name(name: str) -> bool:
    return bool(name) and "/" not in name and name not in (".", "..")


def _open_trusted_dir(name: str, dir_fd: int | None, shown: str, create: bool) -> int | None:
    """An ``O_PATH`` descriptor of directory ``name`` (relative to ``dir_fd``)
    if it is trusted; None if it is missing (and not ``create``) or not."""
    try:
        fd = os.open(name, _CACHE_DIR_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        if not create:
            return None
        try:
            if dir_fd is None:
                _make_private_dirs(name)
            else:
                os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass  # made meanwhile by another process: checked below like any other
        except OSError:
            return None
        try:
            fd = os.open(name, _CACHE_DIR_FLAGS, dir_fd=dir_fd)
        except OSError:
            return None
    except OSError:
        return None
    reason = untrusted_reason(os.fstat(fd), stat.S_IFDIR)
    if reason is not None:
        os.close(fd)
        _distrust(shown, reason)
        return None
    return fd


def _make_private_dirs(path: str) -> None:
    """``mkdir -p`` whose every new directory is 0700 (``os.makedirs`` gives
    the parents it creates the umask's mode)."""
    parent = os.path.dirname(path)
    if parent and parent != path and not os.path.isdir(parent):
        _make_private_dirs(parent)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass


class ProbeCache:
    """Probe verdicts that survive the process but not a reboot."""

    def __init__(self) -> None:
        self._files = CacheDir("probes")

    @staticmethod
    def _name(name: str, base_dir: str) -> str:
        return f"{name}-{os.stat(base_dir).st_dev}-{os.geteuid()}.json"

    def get(self, name: str, target: str, version: str, base_dir: str) -> Probe | None:
        """The verdict remembered for this backend (the same entry point of
        the same version), base directory's filesystem and user, this boot."""
        if self._files.root is None:
            return None
        raw = self._files.read(self._name(name, base_dir))
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        if (data.get("boot_id"), data.get("target"), data.get("version")) != (_boot_id(), target, version):
            return None
        reason = data.get("reason")
        return Probe(bool(data.get("supported")), reason if isinstance(reason, str) else None)

    def put(self, name: str, target: str, version: str, base_dir: str, probe: Probe) -> None:
        if self._files.root is None:
            return
        record = {
            "boot_id": _boot_id(),
            "target": target,
            "version": version,
            "supported": probe.supported,
            "reason": probe.reason,
        }
        self._files.write(self._name(name, base_dir), json.dumps(record).encode())


class Prober:
    """What each backend's probe says on this host for one base directory:
    each is asked at most once per ``RootFS``, and a success is remembered
    across processes for the boot (``ProbeCache``). A failure is never
    remembered: it may be mended at any time (a module loaded, a package
    installed) and costs little to find again. ``run`` probes for real (the
    core's lifecycle, in a throw-away instance)."""

    def __init__(self, run: Callable[[str], Probe], cache: ProbeCache | None, base_dir: str) -> None:
        self._run = run
        self._cache = cache
        self._base_dir = base_dir
        self._verdicts: dict[str, Probe] = {}

    def verdict(self, name: str, target: str, version: str) -> Probe:
        """Backend ``name``'s verdict (its entry point ``target``, of its
        distribution's ``version``: a remembered verdict is for that code)."""
        if name in self._verdicts:
            return self._verdicts[name]
        cache = self._cache
        found = cache.get(name, target, version, self._base_dir) if cache else None
        if found is None:
            found = self._run(name)
            if cache and found.supported:
                cache.put(name, target, version, self._base_dir, found)
        self._verdicts[name] = found
        return found

    def give(self, name: str, verdict: Probe) -> None:
        """Take ``verdict`` as backend ``name``'s without probing: for
        simulated mounts (the conformance suite's), where no real probe can
        succeed."""
        self._verdicts[name] = verdict


def choose(
    ranked: Sequence[tuple[str, BackendInfo | None]],
    broken: Sequence[tuple[str, str]],
    verdict: Callable[[str], Probe],
    *,
    forced: tuple[str, BackendInfo | None] | None,
    layers: int,
    read_only: bool,
) -> str:
    """The backend for a root of ``layers`` layers (read-only if asked):
    ``forced`` (name, info) if given, when it can serve the request and
    works here, else refused; otherwise the first of ``ranked`` (best first)
    that can serve it and whose probe succeeds. Refusals name every
    backend's reason, the ``broken`` ones' (name, error) too."""
    if forced is not None:
        name, info = forced
        why = info.cannot_serve(layers, read_only) if info else None
        if why:
            raise RootFSError(ErrorId.ErrUnsupportedRequest, f"backend {name!r} cannot make this root: {why}")
        probe = verdict(name)
        if not probe.supported:
            raise RootFSError(
                ErrorId.ErrBackendUnsupported, f"backend {name!r} cannot work here: {probe.reason}"
            )
        return name
    rejected = []
    for name, info in ranked:
        why = info.cannot_serve(layers, read_only) if info else None
        if why:
            rejected.append(f"{name}: {why}")
            continue
        probe = verdict(name)
        if probe.supported:
            return name
        rejected.append(f"{name}: {probe.reason}")
    rejected += [f"{name}: {error}" for name, error in broken]
    detail = "; ".join(rejected) if rejected else "no backend is installed in the group rootfs.backends"
    raise RootFSError(ErrorId.ErrNoSupportedBackend, f"no supported backend ({detail})")
