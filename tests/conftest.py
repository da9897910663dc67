"""Shared pytest setup: quiet TensorFlow logs, deterministic seeds per test, parallel runs."""

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


# ------------------------------------------------------------------ parallel runs
# setup.cfg runs the suite on one worker process per core (pytest-xdist, `-n auto`), a whole
# file per worker (module-scoped runs are trained once). Three files share one process-wide
# run (tests/digits_runs.py) and go to the same worker; the files of PER_TEST share nothing
# between their tests (no module-scoped fixture) and hand out each test on its own, so that
# their long tests (golden outputs, fresh processes) run on both workers. The slowest files (as
# measured: trainer runs, subprocesses, numerical Jacobians of whole flows) are handed out
# first, so that no worker is left with a long file at the end. The order and the units affect
# the wall time only, never what a test checks.
SAME_WORKER = {"tests/test_conditional.py": "tests/test_training.py",
               "tests/test_recalibration.py": "tests/test_training.py"}
PER_TEST = {"tests/test_readme.py", "tests/test_golden.py", "tests/test_shared_body.py",
            "tests/test_first_result.py", "tests/test_api_reference.py"}
SLOWEST_FIRST = (
    "test_train.py", "test_recovery.py", "test_run_identity.py", "test_model.py", "test_logistic_mixture_coupling.py",
    "test_training.py", "test_conditional.py", "test_export.py", "test_attention.py",
    "test_keras.py", "test_polyak.py", "test_train_conditional.py", "test_load_run.py", "test_tfds_download.py",
    "test_distributed.py", "test_packaging.py", "test_recalibration.py",
    "test_train_variational.py", "test_train_glow.py", "test_onednn.py",
    "test_readme.py", "test_golden.py", "test_shared_body.py", "test_first_result.py",
    "test_api_reference.py", "test_tfp_conventions.py",
    "test_visualize.py",
    "test_examples.py", "test_conformance.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: files stay whole.


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class Scheduling(LoadFileScheduling):
        """--dist=loadfile in collection order, with SAME_WORKER's files as one unit and
        PER_TEST's tests one unit each."""

        def _split_scope(self, nodeid: str) -> str:
            scope = super()._split_scope(nodeid)
            return nodeid if scope in PER_TEST else SAME_WORKER.get(scope, scope)

    config.option.loadscopereorder = False  # Collection order (above), not the test count.
    return Scheduling(config, log)


@pytest.fixture(autouse=True, scope="session")
def _without_op_stacks():
    """The suite's graphs are traced without their ops' Python stacks, as tfnvp's own
    functions are (``tfnvp.graph_optimization.OP_STACK_TRACES``): the same graphs, about 8%
    less tracing time (tests/test_model.py: 122 -> 113 s).  Tests of the stacks set them
    (tests/test_graph_optimization.py)."""
    from tfnvp import _compat

    with _compat.op_stack_traces(False):
        yield
