"""Copy progress drawn on a terminal, for the ``rootfs`` command.

The library only reports progress (``LinuxSyscalls(progress=...)``, or
``RootFS(..., progress=...)``); the command hands it a ``TerminalProgress``
when its stderr is a terminal, and nothing otherwise. The bar is tqdm's if
tqdm is installed, else rich's if rich is, else one plain line rewritten in
place; either library is imported only when a copy has lasted a second with
a terminal to show it on, never by a command that has nothing to show.
"""

from __future__ import annotations

import os
from typing import Any, TextIO

from rootfs_core.syscalls import CopyProgress


def human(size: float) -> str:
    """``12.3 MiB``: bytes in binary units, as ``ls -h`` and tmpfs count them."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class _Plain:
    """``rootfs: copying etc: 12.3 MiB of 45.0 MiB (27%)``, rewritten in place."""

    def __init__(self, stream: TextIO, name: str) -> None:
        self.stream = stream
        self.name = name

    def update(self, copied: int, total: int) -> None:
        percent = copied * 100 // total if total else 100
        line = f"rootfs: copying {self.name}: {human(copied)} of {human(total)} ({percent}%)"
        self.stream.write(f"\r{line}\033[K")
        self.stream.flush()

    def close(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()


class _Tqdm:
    def __init__(self, stream: TextIO, name: str, total: int) -> None:
        from tqdm import tqdm

        self.bar: Any = tqdm(
            total=total,
            desc=f"rootfs: copying {name}",
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            file=stream,
            leave=False,
            dynamic_ncols=True,
        )

    def update(self, copied: int, total: int) -> None:
        self.bar.total = total
        self.bar.update(copied - self.bar.n)

    def close(self) -> None:
        self.bar.close()


class _Rich:
    def __init__(self, stream: TextIO, name: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        self.progress: Any = Progress(
            TextColumn(f"rootfs: copying {name}"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TimeRemainingColumn(),
            console=Console(file=stream),
            transient=True,
            auto_refresh=False,  # no thread of its own: drawn at each sample
        )
        self.progress.start()
        self.task = self.progress.add_task(name, total=total)

    def update(self, copied: int, total: int) -> None:
        self.progress.update(self.task, completed=copied, total=total, refresh=True)

    def close(self) -> None:
        self.progress.stop()


class TerminalProgress:
    """A ``ProgressCallback`` that draws each copy's progress on ``stream``
    (a terminal), one copy at a time, and clears it when the copy ends."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._copy: tuple[str, str] | None = None
        self._bar: _Plain | _Tqdm | _Rich | None = None

    def __call__(self, event: CopyProgress) -> None:
        bar = self._bar
        if bar is None or self._copy != (event.source, event.target):
            self.close()
            self._copy = (event.source, event.target)
            bar = self._bar = self._open(
                os.path.basename(event.source.rstrip("/")) or event.source, event.total
            )
        bar.update(event.copied, event.total)
        if event.done:
            self.close()

    def _open(self, name: str, total: int) -> _Plain | _Tqdm | _Rich:
        try:
            return _Tqdm(self.stream, name, total)
        except ImportError:
            pass
        try:
            return _Rich(self.stream, name, total)
        except ImportError:
            pass
        return _Plain(self.stream, name)

    def close(self) -> None:
        """Clear the line of a copy still shown (an interrupted one)."""
        if self._bar is not None:
            bar, self._bar, self._copy = self._bar, None, None
            bar.close()
