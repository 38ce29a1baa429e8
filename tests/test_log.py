"""rootfs_core.log: nothing imports ``logging`` until a message can be
heard; then every message reaches the ``rootfs`` logger; ``route_to``
sends them to the caller's writer instead."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest

from rootfs_core import log


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    """Each test starts and ends with no route and no cached logger."""
    log.route_to(None)
    log._logger = None
    yield
    log.route_to(None)
    log._logger = None


def test_an_info_message_does_not_import_logging() -> None:
    code = (
        "import sys\n"
        "from rootfs_core import log\n"
        "log.info('quiet %s', 1)\n"
        "assert 'logging' not in sys.modules, 'info imported logging'\n"
        "log.warning('heard %s', 2)\n"
        "assert 'logging' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().endswith("heard 2")  # logging's last-resort handler


def test_messages_reach_the_rootfs_logger_at_their_levels(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=log.LOGGER_NAME):
        log.info("made %s", "a")
        log.warning("odd %s", "b")
        log.error("bad %s", "c")
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("rootfs", logging.INFO, "made a"),
        ("rootfs", logging.WARNING, "odd b"),
        ("rootfs", logging.ERROR, "bad c"),
    ]


def test_route_to_takes_every_message_formatted(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[int, str]] = []
    log.route_to(lambda level, text: seen.append((level, text)))
    with caplog.at_level(logging.INFO, logger=log.LOGGER_NAME):
        log.info("step %d of %d", 1, 2)
        log.error("plain")
    assert seen == [(log.INFO, "step 1 of 2"), (log.ERROR, "plain")]
    assert caplog.records == []  # none went to logging as well
