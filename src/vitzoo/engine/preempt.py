"""Stopping on request: SIGTERM / SIGINT / SIGUSR1 end a run cleanly at the next optimiser update.

Clusters pre-empt jobs with SIGTERM (SLURM can send SIGUSR1 ahead of the time limit); Ctrl-C sends
SIGINT. The handler only records the signal; the trainer reads ``signal_name`` after every update and,
once asked to stop, writes a full checkpoint at that step and raises :class:`Preempted`. Under
``torchrun`` the flag is all-reduced, so every rank stops at the same update and rank 0 writes.
A second signal while the checkpoint is written changes nothing (the write is atomic either way); a
second Ctrl-C restores Python's default handler, so a third one interrupts at once.
"""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType

from vitzoo.errors import UserError

# sysexits.h EX_TEMPFAIL: "a temporary failure; the user is invited to retry" -- resume the run
EXIT_PREEMPTED = 75
SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGTERM", "SIGINT", "SIGUSR1")) if s is not None)


class Preempted(UserError):
    """The run stopped on a signal after writing a checkpoint; exit status :data:`EXIT_PREEMPTED`."""

    exit_code = EXIT_PREEMPTED
    label = "stopped"

    def __init__(self, msg: str, checkpoint: str | None) -> None:
        super().__init__(msg)
        self.checkpoint = checkpoint


class StopRequest:
    """Records stop signals while active (a context manager); installs nothing off the main thread."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:  # noqa: PYI034 - typing.Self needs Python 3.11
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is None:
            self.signal_name = name
            print(f"{name} received: stopping after the current step, writing a checkpoint", file=sys.stderr,
                  flush=True)
        elif signum == signal.SIGINT:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            print("SIGINT again: press Ctrl-C once more to abort without a checkpoint", file=sys.stderr,
                  flush=True)
