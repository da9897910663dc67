"""Graceful stop on SIGTERM (cluster preemption) and SIGINT (Ctrl-C).

While ``StopSignals`` is active (the whole of ``--mode=train``):

* the **first** SIGTERM or SIGINT only sets a flag and logs that it was
  received; the training loop checks the flag after every step, writes a
  checkpoint of that step (unless one was just written) and raises
  ``Preempted``, which ``trainers/train.py`` turns into exit status
  ``EXIT_PREEMPTED`` = 75 (``EX_TEMPFAIL``: "try again"; a scheduler that
  restarts the same command resumes from that checkpoint).  Nothing is lost.
* a **second** signal exits at once with status ``128 + signum`` (130 for
  SIGINT, 143 for SIGTERM), after running the registered cleanups (the run
  lock).  It is safe at any moment: a checkpoint save it interrupts leaves the
  previous checkpoint the newest one (``trainers/checkpoints.py`` removes the
  leftovers on the next start); only the steps since that checkpoint are lost.

Under ``MultiWorkerMirroredStrategy`` the workers agree on the flag every step
(an all-reduce of one scalar), so a signal delivered to any worker stops all of
them after the same step.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable

import tensorflow as tf
from absl import logging

__all__ = ["EXIT_PREEMPTED", "SIGNALS", "Preempted", "StopSignals", "stop_requested"]

EXIT_PREEMPTED = 75  # EX_TEMPFAIL
SIGNALS = (signal.SIGTERM, signal.SIGINT)

_active: "StopSignals | None" = None


class Preempted(Exception):
    """Training stopped on a signal after checkpointing ``step``."""

    def __init__(self, signame: str, step: int, checkpoint: str | None, saved: bool = True):
        self.signame, self.step, self.checkpoint, self.saved = signame, step, checkpoint, saved
        what = (f"checkpoint {checkpoint} written" if saved else
                f"no checkpoint written (its update was skipped); the newest is {checkpoint}")
        super().__init__(f"Stopped by {signame} after step {step}: {what}. Run the same "
                         "command again to resume.")


class StopSignals:
    """Context manager installing the two-stage SIGTERM/SIGINT handlers (main thread only)."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._cleanups: list[Callable[[], None]] = []

    def add_cleanup(self, cleanup: Callable[[], None]) -> None:
        """Runs ``cleanup`` before an immediate exit on a second signal."""
        self._cleanups.append(cleanup)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.received is not None:
            print(f"Received {name} again: exiting now without a checkpoint; the newest "
                  "checkpoint is intact and a restart resumes from it.", file=sys.stderr,
                  flush=True)
            for cleanup in self._cleanups:
                try:
                    cleanup()
                except Exception:  # noqa: BLE001 - exiting anyway
                    pass
            os._exit(128 + signum)
        self.received = signum
        logging.warning("Received %s: finishing the current step, then writing a checkpoint "
                        "and exiting with status %d (send it again to exit at once).", name,
                        EXIT_PREEMPTED)

    def __enter__(self) -> "StopSignals":
        global _active
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        _active = self
        return self

    def __exit__(self, *exc) -> None:
        global _active
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()
        _active = None

    @property
    def signame(self) -> str:
        return signal.Signals(self.received).name if self.received else "a signal"


def stop_requested(strategy: tf.distribute.Strategy) -> StopSignals | None:
    """The active ``StopSignals`` if a stop was requested (on any worker), else None."""
    local = _active is not None and _active.received is not None
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        flag = tf.constant(1.0 if local else 0.0)
        votes = strategy.run(lambda: tf.identity(flag))
        if float(strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None).numpy()) == 0:
            return None
        if _active is not None and _active.received is None:
            _active.received = signal.SIGTERM  # Another worker was signalled.
        return _active or StopSignals()
    return _active if local else None
