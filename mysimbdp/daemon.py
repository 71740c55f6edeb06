"""What the platform's long-running processes share: their logging, and running a loop until a signal."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Protocol, TypeVar

from . import config as config_mod
from . import metrics
from .errors import MysimbdpError
from .retry import Stopped, retry

log = logging.getLogger(__name__)
T = TypeVar("T")


class Loop(Protocol):
    stop: object  # a threading.Event

    def run(self) -> None: ...


def setup_logging(cfg: config_mod.Config) -> None:
    """Log lines to stdout (the service's log file under $MYSIMBDP_HOME/logs), lazily formatted."""
    logging.basicConfig(
        level=cfg.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stdout
    )


def run_until_stopped(make: Callable[[config_mod.Config], Loop]) -> int:
    """Entry point of a daemon: build it from the configuration, run it, stop it on SIGTERM or SIGINT."""
    cfg = config_mod.load()
    setup_logging(cfg)
    metrics.fresh_process_files()
    loop = make(cfg)
    signal.signal(signal.SIGTERM, lambda *_: loop.stop.set())
    signal.signal(signal.SIGINT, lambda *_: loop.stop.set())
    cfg.paths.run.mkdir(parents=True, exist_ok=True)
    loop.run()
    return 0


def write_atomic(path: Path, text: str) -> None:
    """A small state file of the platform's (a heartbeat, a pid, a count) written through a temporary file
    and a rename, so that a reader never sees it empty or half-written."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def beat(path: Path) -> None:
    """A daemon's heartbeat: the time its loop last went round."""
    write_atomic(path, f"{time.time():.3f}\n")


def heartbeat_age(path: Path) -> float | None:
    """Seconds since the daemon behind ``path`` last beat; None when it never did."""
    try:
        return max(0.0, time.time() - float(path.read_text()))
    except (OSError, ValueError):
        return None


def when_ready(stop: threading.Event, attempt: Callable[[], T], waiting_for: str = "Cassandra") -> T | None:
    """``attempt()`` until it succeeds (a MysimbdpError means "not yet"), or None once ``stop`` is set.
    For daemons that start before the services they need are ready."""
    try:
        return retry(attempt, on=(MysimbdpError,), stop=stop, what=f"waiting for {waiting_for}")
    except Stopped:
        return None
