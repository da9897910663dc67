"""Which ``tf.distribute`` strategy a command runs under, and which worker is the chief.

* ``mirrored`` (the default on one machine): one replica per local GPU, or one per
  logical CPU device when there is no GPU (normally a single CPU replica; tests
  configure two virtual CPUs to exercise the multi-replica path).
* ``multi_worker``: ``MultiWorkerMirroredStrategy``, configured by ``TF_CONFIG``.
* ``one_device``: the first GPU, else the CPU.
* ``auto``: ``multi_worker`` when ``TF_CONFIG`` describes a cluster, else ``mirrored``.

``MultiWorkerMirroredStrategy`` must be created before TensorFlow initializes its
runtime, so commands create the strategy first, before reading any data.
"""

from __future__ import annotations

import functools
import json
import os

import tensorflow as tf

from tfnvp.errors import UsageError

__all__ = ["STRATEGIES", "in_cluster", "make_strategy", "is_chief", "task_id", "describe", "barrier"]

STRATEGIES = ("auto", "mirrored", "multi_worker", "one_device")


def _tf_config_cluster() -> dict:
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return {}
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise UsageError(f"TF_CONFIG is not valid JSON: {error}") from error
    return config.get("cluster", {}) or {}


def in_cluster() -> bool:
    """Whether ``TF_CONFIG`` describes more than one worker."""
    cluster = _tf_config_cluster()
    return sum(len(cluster.get(job, [])) for job in ("chief", "worker")) > 1


def make_strategy(name: str = "auto") -> tf.distribute.Strategy:
    """The strategy called ``name`` (one of ``STRATEGIES``), one instance per process.

    Strategies are created once and reused.  Every ``MirroredStrategy`` numbers
    its collective operations (group and instance keys) from the same start, so
    two multi-replica strategies in one process -- e.g. a test suite, or a
    library user's own strategy -- would mix up their all-reduces; the mirrored
    strategy made here therefore takes its group keys from a range of its own.
    """
    if name not in STRATEGIES:
        raise UsageError(f"Unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}.")
    return _make_strategy(name)


@functools.cache
def _make_strategy(name: str) -> tf.distribute.Strategy:
    if name == "auto":
        return _make_strategy("multi_worker" if in_cluster() else "mirrored")
    if name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        strategy = tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    else:
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        strategy = _mirrored_with_own_collective_keys([d.name for d in devices])
    return strategy


_COLLECTIVE_KEY_BASE = 7_000_000  # Other strategies' group keys count up from 1.


def _mirrored_with_own_collective_keys(devices: list[str]) -> tf.distribute.MirroredStrategy:
    # TensorFlow reads the class attribute `_collective_key_base` when it builds a
    # strategy's collective keys (group keys start at 1 + base) and never changes it.
    cls = tf.distribute.MirroredStrategy
    previous = cls._collective_key_base
    cls._collective_key_base = _COLLECTIVE_KEY_BASE
    try:
        return cls(devices)
    finally:
        cls._collective_key_base = previous


def _resolver(strategy: tf.distribute.Strategy):
    return getattr(strategy, "cluster_resolver", None)


def task_id(strategy: tf.distribute.Strategy) -> tuple[str | None, int]:
    """``(task_type, task_id)`` of this process (``(None, 0)`` outside a cluster)."""
    resolver = _resolver(strategy)
    if resolver is None or not resolver.task_type:
        return None, 0
    return resolver.task_type, int(resolver.task_id or 0)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files: the ``chief``, else worker 0."""
    resolver = _resolver(strategy)
    task_type, index = task_id(strategy)
    if task_type is None:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (not has_chief and task_type == "worker" and index == 0)


def _name(strategy: tf.distribute.Strategy) -> str:
    for cls in (tf.distribute.MultiWorkerMirroredStrategy, tf.distribute.MirroredStrategy,
                tf.distribute.OneDeviceStrategy):
        if isinstance(strategy, cls):
            return cls.__name__ if cls is not tf.distribute.MultiWorkerMirroredStrategy \
                else "MultiWorkerMirroredStrategy"
    return type(strategy).__name__


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Waits until every worker gets here (a no-op on one machine).

    Workers finish at different times (only the chief evaluates); one that
    exits while another still runs makes the survivor's runtime report it as
    crashed.
    """
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        ones = strategy.run(lambda: tf.ones([]))
        strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None).numpy()


def describe(strategy: tf.distribute.Strategy) -> str:
    task_type, index = task_id(strategy)
    where = f", task {task_type}:{index}" if task_type else ""
    devices = getattr(strategy.extended, "worker_devices", ())
    return (f"Strategy {_name(strategy)}: {strategy.num_replicas_in_sync} replica(s) "
            f"in sync{where}; local devices {list(devices)}")
