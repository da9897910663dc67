"""The trainers' console output: one line per event, warnings kept.

Three sources print to the terminal, and each repeated itself:

* TensorFlow's C++ start-up lines.  ``import tensorflow`` loads two shared
  objects that each carry their own copy of absl's C++ logging and of the CUDA
  stub (the core library, then ``_pywrap_profiler_plugin.so``), so the stub's
  ``Could not find cuda drivers`` line and absl's ``All log messages before
  absl::InitializeLog()`` notice are printed twice, before any Python code can
  configure them (``TF_CPP_MIN_LOG_LEVEL`` does not reach them).
  ``deduplicated_stderr`` catches what file descriptor 2 receives during the
  import and passes each distinct line on once.
* TensorFlow's Python logger.  ``tf.get_logger()`` adds its own stderr handler
  (``INFO:tensorflow:...``) when it is created before absl's handler is on the
  root logger, and still propagates to the root logger, where absl prints the
  record again.  ``configure_logging`` removes that handler, so absl prints every
  record once, in one format.
* TensorFlow's own INFO records (``Using MirroredStrategy``, ``Sharding callback
  duration``, ``Assets written to``, and ``--mode=export``'s SavedModel signature
  renames: five lines of 6-8 kB listing every captured variable) describe
  TensorFlow's internals, not the run: they are shown at ``--verbosity=1``
  (debug) and above; TensorFlow's warnings and errors always are.

``--verbosity`` is absl's flag: -1 warnings and errors only, 0 (default) the
trainers' progress too, 1 also debug lines and TensorFlow's INFO records.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
from typing import Iterator

__all__ = ["configure_logging", "deduplicated_stderr"]

# absl C++ log prefix: severity, date or 0000, time or seconds since the epoch, thread id.
_CPP_PREFIX = re.compile(rb"^([IWEF])\d{4} \S+\s+\d+ ")


def _line_key(line: bytes) -> bytes:
    """A line without its timestamp and thread id: repeats of one message compare equal."""
    return _CPP_PREFIX.sub(rb"\1 ", line)


@contextlib.contextmanager
def deduplicated_stderr() -> Iterator[None]:
    """Inside the block, file descriptor 2 goes to a file; afterwards each distinct line once.

    Lines keep their order and their text (timestamps included); a line that
    repeats an earlier one, timestamp and thread id aside, is dropped.  Meant for ``import tensorflow`` (C++ output
    that Python's ``sys.stderr`` never sees).  If the block raises, everything
    it printed is passed on unchanged.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            seen = set()
            for line in captured.read().splitlines(keepends=True):
                key = _line_key(line.rstrip(b"\n"))
                if failed or key not in seen:
                    seen.add(key)
                    os.write(2, line)


class _HideTensorFlowInfo(logging.Filter):
    """Drops records below WARNING logged by TensorFlow's own modules (under ``prefix``)."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or not record.pathname.startswith(self.prefix)


def configure_logging() -> None:
    """absl's handler prints every record once; TensorFlow's INFO records at --verbosity>=1.

    Call after the flags are parsed (``--verbosity`` sets absl's level).  TensorFlow logs
    through its ``tensorflow`` logger and, in newer modules, through absl directly; both reach
    absl's handler, where records from files under TensorFlow's package directory are kept
    only from WARNING up unless the verbosity is debug.
    """
    import tensorflow as tf
    from absl import logging as absl_logging

    absl_logging.use_absl_handler()
    tf_logger = logging.getLogger("tensorflow")
    for handler in list(tf_logger.handlers):
        tf_logger.removeHandler(handler)
    tf_logger.propagate = True
    handler = absl_logging.get_absl_handler()
    for old in [f for f in handler.filters if isinstance(f, _HideTensorFlowInfo)]:
        handler.removeFilter(old)
    if absl_logging.get_verbosity() < absl_logging.DEBUG:
        handler.addFilter(_HideTensorFlowInfo(os.path.dirname(tf.__file__) + os.sep))
