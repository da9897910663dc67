"""trainers.console: each console line once, TensorFlow's INFO records only at --verbosity=1."""

from __future__ import annotations

import logging
import os

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


@pytest.fixture
def tf_logger_state():
    logger = logging.getLogger("tensorflow")
    state = (list(logger.handlers), logger.level, logger.propagate, absl_logging.get_verbosity())
    yield logger
    logger.handlers[:] = state[0]
    logger.setLevel(state[1])
    logger.propagate = state[2]
    absl_logging.set_verbosity(state[3])


@pytest.mark.parametrize("verbosity,info_shown", [(absl_logging.INFO, False),
                                                  (absl_logging.DEBUG, True)])
def test_tensorflow_records_printed_once(tf_logger_state, capfd, verbosity, info_shown):
    # TensorFlow's own handler, as tf.get_logger() adds it before absl's is installed.
    tf_logger_state.addHandler(logging.StreamHandler())
    absl_logging.set_verbosity(verbosity)
    console.configure_logging()
    capfd.readouterr()
    tf.get_logger().info("tf-info-record")
    tf.get_logger().warning("tf-warning-record")
    absl_logging.info("absl-info-record")
    err = capfd.readouterr().err
    assert err.count("tf-warning-record") == 1
    assert err.count("tf-info-record") == (1 if info_shown else 0)
    assert err.count("absl-info-record") == 1
    assert "INFO:tensorflow" not in err and "WARNING:tensorflow" not in err
