"""Helper for tests/test_distributed.py: training steps on 2 replicas vs. 1 device.

Needs two logical CPU devices, which TensorFlow fixes at start-up: run as a script
it configures them itself (a fresh process); imported, ``report()`` expects the
importer to have done it (tests/conftest.py does for pytest).  It trains the same tiny model from the same
initial weights on the same global batch (a) under MirroredStrategy over the two
CPUs with synchronized batch norm and (b) on one device, and prints, as the last
line of stdout, a JSON object of the largest differences between the two.

SGD with learning rate 1 makes the weight update equal to the (clipped) gradient,
so comparing updated weights compares gradients; clipping is active, so the
global-norm clipping must use the all-reduced gradient to agree.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402

if __name__ == "__main__":
    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

import tfnvp  # noqa: E402
from trainers import data  # noqa: E402
from trainers import steps as steps_lib  # noqa: E402
from trainers import strategy as strategy_lib  # noqa: E402

GLOBAL_BATCH = 16
STEPS = 2
CLIP = 1.0


def _values(variables) -> list[np.ndarray]:
    return [np.array(keras.ops.convert_to_numpy(v.value)) for v in variables]


def build(strategy: tf.distribute.Strategy, synchronized: bool, recompute_gradients: bool):
    with strategy.scope():
        model = tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=1, hidden_channels=8,
                              synchronized_batch_norm=synchronized,
                              recompute_gradients=recompute_gradients)
        optimizer = steps_lib.pre_reduced(keras.optimizers.SGD)(learning_rate=1.0)
    return model, optimizer


def train(strategy: tf.distribute.Strategy, model, optimizer, batch: dict[str, tf.Tensor]):
    dataset = tf.data.Dataset.from_tensor_slices(batch).batch(GLOBAL_BATCH)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    element = next(iterator)
    steps = steps_lib.TrainSteps(model, optimizer, strategy, iterator.element_spec, GLOBAL_BATCH,
                                 l2=5e-5, clip_grad_norm=CLIP)
    outputs = [steps.train_step(element) for _ in range(STEPS)]
    # Every replica's copy of every variable must be identical.
    spread = 0.0
    for variable in model.weights:
        copies = [np.asarray(c) for c in strategy.experimental_local_results(variable.value)]
        spread = max([spread] + [float(np.max(np.abs(c - copies[0]))) for c in copies])
    return outputs, spread


def max_abs(a, b) -> float:
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


def max_rel(a, b) -> float:
    return max(float(np.max(np.abs(x - y)) / (np.max(np.abs(x)) + 1e-6)) for x, y in zip(a, b))


def report(recompute_gradients: bool = False) -> dict:
    """Trains both ways; returns the comparison (see the module docstring).

    The replicas trace their steps in concurrent threads, and the backward pass
    recomputes batch-normalized units (always) and, with ``recompute_gradients``,
    whole conditioners: the recomputation's mode must be each replica's own."""
    batch = next(iter(data.make_train_dataset(data.DataConfig("digits", batch_size=GLOBAL_BATCH))))
    two = strategy_lib.make_strategy("mirrored")  # The process's one mirrored strategy.
    one = strategy_lib.make_strategy("one_device")
    keras.utils.set_random_seed(0)
    single, single_opt = build(one, synchronized=False, recompute_gradients=recompute_gradients)
    double, double_opt = build(two, synchronized=True, recompute_gradients=recompute_gradients)
    double.set_weights(single.get_weights())
    initial = _values(single.trainable_variables)
    single_out, _ = train(one, single, single_opt, batch)
    double_out, spread = train(two, double, double_opt, batch)
    return dict(
        num_replicas=two.num_replicas_in_sync,
        nll=[[float(o["nll"]) for o in out] for out in (single_out, double_out)],
        grad_norm=[[float(o["grad_norm"]) for o in out] for out in (single_out, double_out)],
        applied=[bool(o["applied"]) for o in single_out + double_out],
        # Absolute: the updates (= clipped gradients, global norm 1) are O(0.1).
        trainable_max_abs_diff=max_abs(_values(single.trainable_variables),
                                       _values(double.trainable_variables)),
        max_update=max_abs(initial, _values(single.trainable_variables)),
        statistics_max_rel_diff=max_rel(_values(single.non_trainable_variables),
                                        _values(double.non_trainable_variables)),
        replica_spread=spread,
        num_trainable=len(single.trainable_variables),
        num_statistics=len(single.non_trainable_variables),
    )


if __name__ == "__main__":
    print(json.dumps(report("--recompute_gradients" in sys.argv[1:])))
