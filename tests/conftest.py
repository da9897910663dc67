"""Shared pytest setup: quiet TensorFlow logs, deterministic seeds per test."""

import io
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

# Two logical CPU devices, so MirroredStrategy can run two replicas in-process
# (must happen before TensorFlow initializes its devices).
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)  # Python, NumPy and TensorFlow.


@pytest.fixture
def absl_log():
    """The absl log lines of in-process runs (pass --verbosity=0 for INFO lines)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("absl")
    logger.addHandler(handler)
    yield stream.getvalue
    logger.removeHandler(handler)
