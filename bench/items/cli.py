"""Item 3: the command line, a call at a time (``rootfs generate``, ``rootfs
list``, ``rootfs remove``) against ``python -c pass`` of the same interpreter
and environment, with the probe cache warm (the usual case) and off (every
call probes); and the library's own side of that cache (``RootFS()`` and a
cycle, cache off against warm).

A call's start-up is what the command line adds to the library, so the
baseline is the cheapest start of the same interpreter: the ratio says
how many interpreter starts a call costs. ``python -S -c pass`` is printed
beside it, because ``site`` (``.pth`` files, editable-install finders) can
triple the baseline in a development environment and flatter the ratio.
"""

from __future__ import annotations

import os
import sys

from measure import Bench, Ratio, command, log, ms, timed

from rootfs_core import RootFS

TARGET = 3.5  # issue 15: each call, warm, over python -c pass
CALLS = {"generate": "gen", "list": "list", "remove": "rm"}  # the call, and its key in medians_ms
PASS = [sys.executable, "-c", "pass"]
NO_SITE = [sys.executable, "-S", "-c", "pass"]


def _console_script() -> list[str]:
    """The installed ``rootfs`` console script beside this interpreter (not a
    pyenv shim, which is itself a shell script), else ``-m rootfs_core.cli``."""
    script = os.path.join(os.path.dirname(sys.executable), "rootfs")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return [script]
    return [sys.executable, "-m", "rootfs_core.cli"]


class Cli:
    """``rootfs`` run as a user runs it, on the base directory ``base``, with
    ``ROOTFS_CACHE=cache`` (empty: no probe cache) and ``ROOTFS_BACKEND``
    only if ``backend`` is given (else the best backend is chosen, as on a
    host without configuration), timed per call.

    Bytecode is what an installed package has: written once by the first
    call (under the work directory, not into the source tree) and read
    after, even where the caller's environment says PYTHONDONTWRITEBYTECODE.
    """

    def __init__(self, work: str, base: str, cache: str, backend: str | None = None) -> None:
        drop = ("ROOTFS_BACKEND", "PYTHONPROFILEIMPORTTIME", "PYTHONDONTWRITEBYTECODE")
        self.env = {k: v for k, v in os.environ.items() if k not in drop} | {
            "ROOTFS_CONFIG": f"{work}/no-config.toml",
            "ROOTFS_BASE_DIR": base,
            "ROOTFS_CACHE": cache,
            "PYTHONPYCACHEPREFIX": f"{work}/pycache",
        }
        if backend is not None:
            self.env["ROOTFS_BACKEND"] = backend
        self.argv = _console_script()

    def run(self, argv: list[str]) -> tuple[float, str]:
        """Any program, in this command line's environment (the baselines)."""
        return command(argv, self.env)

    def call(self, *args: str) -> tuple[float, str]:
        return self.run([*self.argv, *args])

    def generate(self, prototype: str) -> str:
        return self.call("generate", prototype)[1]

    def remove(self, root: str) -> None:
        self.call("remove", root)


def run(b: Bench) -> None:
    base = f"{b.work}/cli"
    os.makedirs(base)
    clis = {"warm": Cli(b.work, base, b.warm_cache), "cold": Cli(b.work, base, "")}
    warm = clis["warm"]
    warm.remove(warm.generate(b.busybox))  # writes the bytecode, warms the page cache and the probe cache
    warm.run(PASS)
    times: dict[str, list[float]] = {"pass": [], "nosite": []}
    times |= {f"{kind}.{key}": [] for kind in clis for key in CALLS.values()}
    reps = b.settings.cli_reps
    log(f"3. CLI: {reps} rounds of python -c pass, generate+list+remove warm, generate+list+remove cold")
    for _ in range(reps):
        times["pass"].append(warm.run(PASS)[0])
        times["nosite"].append(warm.run(NO_SITE)[0])
        for kind, cli in clis.items():
            seconds, root = cli.call("generate", b.busybox)
            times[f"{kind}.gen"].append(seconds)
            times[f"{kind}.list"].append(cli.call("list")[0])  # one instance to list: the one just made
            times[f"{kind}.rm"].append(cli.call("remove", root)[0])
    m = {f"cli.{k}": ms(v) for k, v in times.items()}
    b.results.medians_ms |= m
    one = m["cli.pass"]
    baseline = f"python -S -c pass {m['cli.nosite']:.1f} ms"
    for call, key in CALLS.items():
        took = m[f"cli.warm.{key}"]
        b.results.ratios.append(
            Ratio(
                "3",
                f"CLI {call} / python -c pass, probe cache warm",
                took / one,
                TARGET,
                f"{took:.1f} ms",
                f"{one:.1f} ms",
                f"+{took - one:.0f} ms above python -c pass; {baseline}",
            )
        )
    pair = m["cli.cold.gen"] + m["cli.cold.rm"]
    per_call = ", ".join(f"{call} {m[f'cli.cold.{key}'] / one:.2f}x" for call, key in CALLS.items())
    b.results.ratios.append(
        Ratio(
            "3",
            "CLI generate+remove / 2x python -c pass, probe cache cold",
            pair / (2 * one),
            None,
            f"{pair:.1f} ms",
            f"2 x {one:.1f} ms",
            f"per call: {per_call}; {baseline}",
        )
    )
    _library_side(b)


def _library_side(b: Bench) -> None:
    """What a fresh RootFS pays for probing when the cache is off or cold:
    open a base directory, generate, remove, in this process."""
    base = f"{b.work}/open"
    os.makedirs(base)
    opened: dict[str, list[float]] = {"warm": [], "cold": []}
    saved = os.environ.get("ROOTFS_CACHE")
    try:
        for _ in range(max(5, b.settings.cli_reps)):
            for kind, cache in (("warm", b.warm_cache), ("cold", "")):
                os.environ["ROOTFS_CACHE"] = cache

                def once() -> None:
                    rfs = RootFS(base)
                    rfs.remove(rfs.generate(b.busybox))

                opened[kind].append(timed(once)[0])
    finally:
        if saved is None:
            os.environ.pop("ROOTFS_CACHE", None)
        else:
            os.environ["ROOTFS_CACHE"] = saved
    m = {"open.warm": ms(opened["warm"]), "open.cold": ms(opened["cold"])}
    b.results.medians_ms |= m
    b.results.ratios.append(
        Ratio(
            "3",
            "RootFS()+generate+remove, probe cache off / warm",
            m["open.cold"] / m["open.warm"],
            None,
            f"{m['open.cold']:.2f} ms",
            f"{m['open.warm']:.2f} ms",
            "what a fresh RootFS pays for probing when the cache is off or cold",
        )
    )
