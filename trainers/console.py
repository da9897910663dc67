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

TensorFlow's C++ log level is ``TF_CPP_MIN_LOG_LEVEL`` (0 everything, 1 warnings
and errors, 2 errors, 3 none).  The commands set it to 2 when the user has not
(``quiet_tensorflow_by_default``, before TensorFlow loads), and apply it to the
start-up lines TensorFlow prints before its logging reads it
(``deduplicated_stderr(min_level)``; both: ``start_tensorflow``).  The library never changes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile
import textwrap
from typing import Iterator, Sequence

__all__ = ["HELP_ARGS", "TF_LOG_LEVEL", "configure_logging", "deduplicated_stderr",
           "exit_if_help", "help_text", "is_user_error", "quiet_tensorflow_by_default",
           "start_tensorflow", "tf_min_log_level"]

# absl C++ log prefix: severity, date or 0000, time or seconds since the epoch, thread id.
_CPP_PREFIX = re.compile(rb"^([IWEF])\d{4} \S+\s+\d+ ")
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}
# absl's notice that logging is not initialized yet (what follows it is printed regardless of
# TF_CPP_MIN_LOG_LEVEL), and, with no CUDA driver installed, the CUDA stub's INFO line and the
# error that follows from it when TensorFlow looks for GPUs.
_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_NO_CUDA_DRIVER = b"Could not find cuda drivers"
_CUINIT_FAILED = b"failed call to cuInit"

#: The commands' TensorFlow C++ log level unless the user sets ``TF_CPP_MIN_LOG_LEVEL``:
#: errors only (TensorFlow's warnings are about its internals, e.g. tf.data's
#: ``GeneratorDatasetOp ... will not be optimized``).
TF_LOG_LEVEL = "2"


def quiet_tensorflow_by_default() -> None:
    """``TF_CPP_MIN_LOG_LEVEL=TF_LOG_LEVEL`` unless set; call before TensorFlow loads."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", TF_LOG_LEVEL)


def start_tensorflow() -> None:
    """Loads TensorFlow and finds its devices (CUDA's start-up), printing their start-up lines
    once each at ``TF_CPP_MIN_LOG_LEVEL`` (default ``TF_LOG_LEVEL``).  A command's first call,
    before anything imports TensorFlow.  Listing the physical devices does not initialize
    TensorFlow's runtime: a strategy can still be made afterwards."""
    quiet_tensorflow_by_default()
    with deduplicated_stderr(tf_min_log_level()):
        import tensorflow as tf

        tf.config.list_physical_devices()


def tf_min_log_level() -> int:
    """``TF_CPP_MIN_LOG_LEVEL`` as TensorFlow reads it (0 if unset or not a number)."""
    value = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0").strip()
    return int(value) if value.isdigit() else 0


def _line_key(line: bytes) -> bytes:
    """A line without its timestamp and thread id: repeats of one message compare equal."""
    return _CPP_PREFIX.sub(rb"\1 ", line)


def _shown(line: bytes, min_level: int, no_cuda_driver: bool) -> bool:
    """Whether a C++ start-up line passes ``TF_CPP_MIN_LOG_LEVEL = min_level``."""
    if min_level < 1:
        return True
    if line.startswith(_BANNER):
        return False
    match = _CPP_PREFIX.match(line)
    if match is None:
        return True  # Not a C++ log line (Python's warnings, a traceback).
    if no_cuda_driver and _CUINIT_FAILED in line:
        return False  # The consequence of the missing driver, which the stub reported.
    return _SEVERITY[match.group(1)] >= min_level


@contextlib.contextmanager
def deduplicated_stderr(min_level: int = 0) -> Iterator[None]:
    """Inside the block, file descriptor 2 goes to a file; afterwards each distinct line once.

    Lines keep their order and their text (timestamps included); a line that
    repeats an earlier one, timestamp and thread id aside, is dropped.  Meant for ``import
    tensorflow`` and its first look for devices (C++ output that Python's ``sys.stderr``
    never sees).  ``min_level`` applies ``TF_CPP_MIN_LOG_LEVEL`` to those lines, which
    TensorFlow prints before it reads the variable: at 1 and above, C++ lines of a lower
    severity go, with absl's notice that logging is not initialized and, when the CUDA stub
    found no driver, the ``failed call to cuInit`` error that follows from it.  If the block
    raises, everything it printed is passed on unchanged.
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
            text = captured.read()
            no_cuda_driver = _NO_CUDA_DRIVER in text
            seen = set()
            for line in text.splitlines(keepends=True):
                key = _line_key(line.rstrip(b"\n"))
                if failed or (key not in seen
                              and _shown(line.rstrip(b"\n"), min_level, no_cuda_driver)):
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


# ----------------------------------------------------------------------- errors
def is_user_error(error: BaseException) -> bool:
    """Whether the commands print ``error`` in one line, without a traceback: the errors a
    user causes and can fix.  A refused value (``tfnvp.UsageError``: a flag, the data, the
    run directory); the files, the disk and the network (``OSError``, TensorFlow's
    ``NotFoundError`` and ``DataLossError``); a check of the data inside the input pipeline
    (a failed ``tf.debugging`` assertion, e.g. an image file that does not decode); a run
    directory in use; a checkpoint that does not restore or cannot be written; a diverged
    run (``TrainingError``, a non-finite evaluation); running out of memory (the batch
    size).  Any other error comes from tfnvp, the trainers or a library they use, and
    keeps its traceback."""
    import tensorflow as tf

    import tfnvp
    from trainers import checkpoints, run_lock, training

    if isinstance(error, tf.errors.InvalidArgumentError):
        return "assertion failed" in (error.message or "")
    return isinstance(error, (
        tfnvp.UsageError, OSError, checkpoints.CheckpointError, checkpoints.CheckpointWriteError,
        run_lock.RunLockedError, training.TrainingError, FloatingPointError,
        tf.errors.NotFoundError, tf.errors.DataLossError, tf.errors.ResourceExhaustedError,
        MemoryError))


# ------------------------------------------------------------------------- help
HELP_ARGS = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")


def _flag_lines(flag) -> list[str]:
    """``--name=<a|b> (default: x)`` (a flag's name, its values and its default), then its
    help, indented."""
    values = getattr(flag.parser, "enum_values", None)
    help_text = flag.help
    if flag.boolean:
        name = f"--[no]{flag.name}"
    elif values:
        name = f"--{flag.name}=<{'|'.join(values)}>"
        help_text = help_text.removeprefix(f"<{'|'.join(values)}>: ")  # absl's own prefix.
    else:
        name = f"--{flag.name}"
    default = "unset" if flag.default is None else flag.default_as_str.strip("'")
    return [f"  {name} (default: {default})"] + textwrap.wrap(
        help_text, 86, initial_indent=" " * 6, subsequent_indent=" " * 6)


def help_text(summary: str, usage: str, groups: dict[str, Sequence[str]],
              flag_values) -> str:
    """The command's own flags, by group, each with its values, default and help."""
    lines = [summary, "", f"Usage: {usage}", ""]
    for group, names in groups.items():
        lines.append(f"{group}:")
        for name in names:
            lines += _flag_lines(flag_values[name])
        lines.append("")
    lines.append("--flagfile=FILE reads flags from a file; --verbosity=-1 shows warnings and "
                 "errors only;")
    lines.append("--helpfull lists every flag, absl's and TensorFlow's included.")
    return "\n".join(lines)


def exit_if_help(argv: Sequence[str], summary: str, usage: str,
                 groups: dict[str, Sequence[str]], flag_values) -> None:
    """``--help``/``--helpshort`` (``HELP_ARGS``): prints ``help_text`` to stdout, exits 0.

    absl's own ``--help`` lists the flags of the main module only (an installed command's
    script defines none) and exits with status 1.
    """
    if any(arg in HELP_ARGS for arg in argv[1:]):
        print(help_text(summary, usage, groups, flag_values), flush=True)
        sys.exit(0)
