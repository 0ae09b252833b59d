"""Graceful stops for long-running CLI commands (MQTT ingestion, streams)."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

log = logging.getLogger(__name__)


class Stoppable(Protocol):
    @property
    def stopping(self) -> bool: ...

    def stop(self) -> None: ...


@contextlib.contextmanager
def stop_on_signals(
    target: Stoppable,
    doing: str = "stopping",
    signals: Sequence[int] = (signal.SIGINT, signal.SIGTERM),
) -> Iterator[None]:
    """The first SIGINT/SIGTERM calls ``target.stop()`` (it finishes its work cleanly), a
    second one interrupts. A no-op outside the main thread; handlers are restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if target.stopping:
            raise KeyboardInterrupt
        log.warning("signal %d: %s", signum, doing)
        target.stop()

    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
