"""One way to take over SIGINT and SIGTERM for a stretch of code (stdlib only: the command
dispatcher uses it before anything heavy is imported)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_handled(handler: Callable[[int, object], None], signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within: ``handler`` receives ``signals``; the previous handlers come back at the end.
    Signal handlers belong to the main thread: elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, earlier in previous.items():
            signal.signal(sig, earlier)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt (``sigterm_as_interrupt``)."""


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within: SIGTERM raises ``Terminated``, so code that finishes cleanly on Ctrl-C does on
    SIGTERM too (its default killed the process on the spot)."""

    def terminate(_signum: int, _frame: object) -> None:
        raise Terminated

    with signals_handled(terminate, (signal.SIGTERM,)):
        yield
