"""The library's log, without importing :mod:`logging` until it can be heard.

Importing ``logging`` costs about 5 ms here, a sixth of a command-line
call's whole budget, and most calls log nothing anyone sees. A message can
only be heard once ``logging`` is imported (a handler or a level needs it),
so until then info messages are dropped, exactly as ``logging`` would drop
them with nothing configured, and warnings and errors import it and go to
the ``rootfs`` logger (its last-resort handler prints them, as before). A
program that owns the output (the ``rootfs`` command) routes every message
to its own writer with :func:`route_to` and never imports ``logging``.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

# The numeric levels of ``logging``, so callers need not import it.
INFO = 20
WARNING = 30
ERROR = 40

LOGGER_NAME = "rootfs"

_sink: Callable[[int, str], None] | None = None
_logger: logging.Logger | None = None  # the "rootfs" logger, once logging is imported


def route_to(sink: Callable[[int, str], None] | None) -> None:
    """Send every message, formatted, to ``sink(level, text)`` instead of
    ``logging``; None goes back to ``logging``."""
    global _sink
    _sink = sink


def emit(level: int, message: str, *args: object) -> None:
    """``message % args`` at ``level``, to whoever can hear it."""
    if _sink is not None:
        _sink(level, message % args if args else message)
        return
    global _logger
    if _logger is None:
        if level < WARNING and "logging" not in sys.modules:
            return
        import logging

        _logger = logging.getLogger(LOGGER_NAME)  # the same object for the process's life
    _logger.log(level, message, *args)


def info(message: str, *args: object) -> None:
    emit(INFO, message, *args)


def warning(message: str, *args: object) -> None:
    emit(WARNING, message, *args)


def error(message: str, *args: object) -> None:
    emit(ERROR, message, *args)
