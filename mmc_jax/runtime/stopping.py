"""Graceful stop: SIGINT (Ctrl-C) and SIGTERM end a run at a step boundary, not mid-write.

Long loops (training epochs, a path evaluation's parts) poll :func:`requests` and, when a
stop was asked for, save what they have and raise :class:`Interrupted`; the entry points print
its one line and exit with ``128 + signal``. A rerun of the same command resumes from what
was saved and ends as an uninterrupted run would. Outside such loops,
:func:`raise_on_signals` turns the signal into :class:`Interrupted` at once (the files written
so far are complete: every writer replaces files atomically). Signal handlers are
process-wide by nature; both context managers put the previous handlers back when they end.

:class:`Interrupted` derives from ``BaseException``, as ``KeyboardInterrupt`` does, so that
an ``except Exception`` meant for a library's errors (an unreadable checkpoint, a backend
without memory statistics) never takes a stop for one of them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from typing import Iterator, Optional

#: The signals that ask a run to stop.
SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The message of a stop outside the loops that say where they stopped.
STOPPED = "stopped; rerun the same command to continue"


class Interrupted(BaseException):
    """A run stopped by SIGINT or SIGTERM (``signum``) after saving what it had."""

    def __init__(self, message: str, signum: int = signal.SIGINT):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number."""
        return 128 + self.signum


class Requests:
    """The stop asked for while a loop runs: ``signum`` is None until a signal arrives."""

    def __init__(self):
        self.signum: Optional[int] = None

    def __bool__(self) -> bool:
        return self.signum is not None

    def raise_if_asked(self, where: str) -> None:
        """Raises :class:`Interrupted` (``stopped <where>; rerun ...``) when asked."""
        if self:
            raise Interrupted(f"stopped {where}; rerun the same command to continue", self.signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def requests() -> Iterator[Requests]:
    """Within the block, SIGINT/SIGTERM only record themselves in the yielded
    :class:`Requests` for the loop to poll at its next step boundary. A request the block
    leaves unanswered (it ended normally without raising) raises :class:`Interrupted` as the
    block ends, so no stop is lost. (Off the main thread, where Python cannot install
    handlers, nothing changes and nothing is ever recorded.)"""
    asked = Requests()
    if not _main_thread():
        yield asked
        return

    def record(signum, frame):
        del frame
        asked.signum = signum

    previous = {s: signal.signal(s, record) for s in SIGNALS}
    try:
        yield asked
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if asked:
        raise Interrupted(STOPPED, asked.signum)


@contextlib.contextmanager
def raise_on_signals() -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM raise :class:`Interrupted` wherever the program is
    (loops inside it that poll :func:`requests` take over while they run).

    Where Python cannot let an exception out (a garbage-collection callback, a ``__del__``),
    it hands the exception to ``sys.unraisablehook`` and goes on; the hook installed here sends
    the signal again instead, so the stop is raised at the next point that can raise it,
    and nothing is printed."""
    if not _main_thread():
        yield
        return

    def stop(signum, frame):
        del frame
        raise Interrupted(STOPPED, signum)

    def unraisable(info):
        if isinstance(info.exc_value, Interrupted):  # sent again, from outside this frame
            again = threading.Timer(0.01, os.kill, (os.getpid(), info.exc_value.signum))
            again.daemon = True
            again.start()
        else:
            previous_hook(info)

    previous = {s: signal.signal(s, stop) for s in SIGNALS}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if sys.unraisablehook is unraisable:
            sys.unraisablehook = previous_hook
