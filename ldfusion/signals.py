"""One way to take over SIGINT and SIGTERM for a stretch of code (stdlib only: the command
dispatcher uses it before anything heavy is imported)."""

from __future__ import annotations

import contextlib
import functools
import signal
import sys
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


def stopped_line(prog: str, word: str) -> None:
    """The line a command that a signal stopped ends with: not an error, and the same wherever the
    signal lands (the dispatcher said "ldfusion run: interrupted", a command "ldfusion run: error: interrupted")."""
    print(f"{prog}: {word}", file=sys.stderr)


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


@contextlib.contextmanager
def signal_stack_kept() -> Iterator[None]:
    """Within: whatever the code run sets as this thread's alternate signal stack is undone at the end.

    OpenVINO's CPU plugin, compiling a model, points the calling thread's alternate signal
    stack at memory the compiled model owns (room for AMX state) and leaves it there. Python
    runs its signal handlers on that stack, so once the model was freed, the next Ctrl-C on the
    thread crashed the process with SIGSEGV instead of stopping it (Linux; a no-op elsewhere).
    """
    stacks = _signal_stacks()
    if stacks is None:
        yield
        return
    get, put = stacks
    before = get()
    try:
        yield
    finally:
        put(before)


@functools.cache
def _signal_stacks() -> tuple[Callable[[], object], Callable[[object], None]] | None:
    """(read, restore) of the calling thread's ``sigaltstack`` through libc; None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    class StackT(ctypes.Structure):  # glibc's stack_t
        _fields_ = [("ss_sp", ctypes.c_void_p), ("ss_flags", ctypes.c_int), ("ss_size", ctypes.c_size_t)]

    sigaltstack = ctypes.CDLL(None, use_errno=True).sigaltstack

    def get() -> StackT:
        current = StackT()
        sigaltstack(None, ctypes.byref(current))
        return current

    def put(stack: StackT) -> None:
        # SS_ONSTACK is a read-only flag: setting a stack takes 0 (enabled) or SS_DISABLE.
        sigaltstack(ctypes.byref(StackT(stack.ss_sp, stack.ss_flags & _SS_DISABLE, stack.ss_size)), None)

    return get, put


_SS_DISABLE = 2  # Linux's value on every architecture
