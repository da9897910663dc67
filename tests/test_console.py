"""trainers.console: each console line once, TensorFlow's INFO records only at --verbosity=1."""

from __future__ import annotations

import logging
import os
import sys

import pytest
import tensorflow as tf
from absl import logging as absl_logging

from trainers import console

BANNER = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1795901208.550822   28263 cudart_stub.cc:31] Could not find cuda drivers.\n",
    b"E0000 00:00:1795901208.740454   28263 other.cc:1] A real error.\n",
]
REPEAT = [
    BANNER[0],
    b"I0000 00:00:1795901213.118335   28263 cudart_stub.cc:31] Could not find cuda drivers.\n",
    b"E0000 00:00:1795901213.999999   28263 other.cc:1] Another real error.\n",
]


def test_repeated_cpp_lines_printed_once(capfd):
    with console.deduplicated_stderr():
        for line in BANNER + REPEAT:
            os.write(2, line)
    err = capfd.readouterr().err.encode()
    # The first of each message with its own timestamp, the new error too; no repeats.
    assert err == b"".join(BANNER) + REPEAT[2]


def test_everything_passed_on_when_the_block_fails(capfd):
    with pytest.raises(ImportError):
        with console.deduplicated_stderr():
            for line in BANNER + REPEAT:
                os.write(2, line)
            raise ImportError("simulated")
    assert capfd.readouterr().err.encode() == b"".join(BANNER + REPEAT)


class _CurrentStderr:
    """Writes to whatever ``sys.stderr`` is at the time (pytest swaps it per test)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


@pytest.fixture
def logging_state():
    logger = logging.getLogger("tensorflow")
    handler = absl_logging.get_absl_handler()
    state = (list(logger.handlers), logger.propagate, list(handler.filters),
             absl_logging.get_verbosity(), handler.python_handler.stream)
    # The handler keeps the stream of its creation, which may be an earlier test's captured
    # stderr (a trainer test in the same worker process): write to this test's instead.
    handler.python_handler.stream = _CurrentStderr()
    yield logger
    handler.python_handler.stream = state[4]
    logger.handlers[:] = state[0]
    logger.propagate = state[1]
    handler.filters[:] = state[2]
    absl_logging.set_verbosity(state[3])


def _record_from_tensorflow(level: int, message: str) -> logging.LogRecord:
    """A record as TensorFlow's own modules log it (their file under TensorFlow's package)."""
    path = os.path.join(os.path.dirname(tf.__file__), "python", "saved_model", "x.py")
    return logging.LogRecord("absl", level, path, 1, message, None, None)


@pytest.mark.parametrize("verbosity,info_shown", [(absl_logging.INFO, False),
                                                  (absl_logging.DEBUG, True)])
def test_tensorflow_records_printed_once(logging_state, capfd, verbosity, info_shown):
    # TensorFlow's own handler, as tf.get_logger() adds it before absl's is installed.
    logging_state.addHandler(logging.StreamHandler())
    absl_logging.set_verbosity(verbosity)
    console.configure_logging()
    console.configure_logging()  # idempotent
    capfd.readouterr()
    tf.get_logger().warning("tf-logger-warning")
    logging.getLogger().handle(_record_from_tensorflow(logging.INFO, "tf-module-info"))
    logging.getLogger().handle(_record_from_tensorflow(logging.WARNING, "tf-module-warning"))
    absl_logging.info("absl-info-record")
    err = capfd.readouterr().err
    assert err.count("tf-logger-warning") == 1
    assert err.count("tf-module-warning") == 1
    assert err.count("tf-module-info") == (1 if info_shown else 0)
    assert err.count("absl-info-record") == 1
    assert "WARNING:tensorflow" not in err


START_UP = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1796602291.756297    3406 port.cc:153] oneDNN custom operations are on.\n",
    b"I0000 00:00:1796602291.756595    3406 cudart_stub.cc:31] Could not find cuda drivers on "
    b"your machine, GPU will not be used.\n",
    b"W0000 00:00:1796602299.887751    3406 dataset.cc:997] Input of GeneratorDatasetOp::Dataset "
    b"will not be optimized.\n",
    b"E0000 00:00:1796602295.442347    3406 cuda_platform.cc:52] failed call to cuInit: INTERNAL: "
    b"CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)\n",
    b"E0000 00:00:1796602295.442347    3406 other.cc:1] A real error.\n",
    b"/some/module.py:1: UserWarning: a Python warning\n",
]


@pytest.mark.parametrize("min_level, shown", [
    (0, START_UP),
    (1, [START_UP[3], START_UP[5], START_UP[6]]),
    (2, [START_UP[5], START_UP[6]]),
    (3, [START_UP[6]]),
])
def test_start_up_lines_follow_the_log_level(capfd, min_level, shown):
    """TF_CPP_MIN_LOG_LEVEL applied to what TensorFlow prints before it reads the variable;
    without a CUDA driver, cuInit's failure is its consequence, not news."""
    with console.deduplicated_stderr(min_level):
        for line in START_UP:
            os.write(2, line)
    assert capfd.readouterr().err.encode() == b"".join(shown)


def test_cuinit_failures_are_shown_when_a_driver_was_found(capfd):
    with console.deduplicated_stderr(2):
        os.write(2, START_UP[4])
    assert capfd.readouterr().err.encode() == START_UP[4]
