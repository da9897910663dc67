"""How a trainer command ends: right after its last line, with everything written.

When a command returns, Python frees what the run still holds, and TensorFlow's
destructors run. One of them can stall the exit for up to a minute: a ``tf.data``
iterator with autotuning stops its optimization thread when it is freed
(``RootDataset::Iterator``'s destructor cancels, then joins that thread), and the thread
can miss the stop. TensorFlow's ``CancellationManager::StartCancel`` runs the callback
that wakes the thread *before* it marks itself cancelled, and
``Model::OptimizeLoop`` re-checks "cancelled?" as soon as it wakes: when it wins that
race it goes back to sleep for the rest of its optimization period, which doubles
after each optimization up to 60 s. A distributed dataset's per-device iterator has
that thread whatever the input pipeline's own options say (the strategy builds it).
Measured on digits runs of 20 steps: 0.13-0.18 s in 7 of 10, 3-6 s in 3; after the
600-step quickstart once 48 s (docs/performance.md, "The exit").

So a command does not free such objects at its end:

* ``hold(obj)`` keeps ``obj`` until the command ends (the trainer's input iterator);
* ``exit_now(code)`` ends the command: Python's exit handlers run (``logging``'s
  flush, temporary files of autograph, ...), the standard streams are flushed, and
  the process ends with ``os._exit`` before Python frees anything. Files the run
  writes are closed by then (checkpoints are written synchronously; the trainer
  closes its TensorBoard writers when training ends).
* ``release()`` frees what is held, for callers that go on in the same process
  (``trainers.train.run``, the tests): they may still pay the wait there.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any, NoReturn

_held: list[Any] = []


def hold(obj: Any) -> None:
    """Keeps ``obj`` alive until ``exit_now`` or ``release``."""
    _held.append(obj)


def release() -> None:
    """Frees what ``hold`` kept (its destructors run here)."""
    _held.clear()


def exit_now(code: int) -> NoReturn:
    """Ends the process with exit status ``code`` without freeing Python's objects.

    Exit handlers run first, and the standard streams are flushed, as at a normal exit.
    """
    atexit._run_exitfuncs()  # noqa: SLF001 - Python's own exit handlers, in order.
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # A closed or broken pipe: nothing more to write.
            pass
    os._exit(code)
