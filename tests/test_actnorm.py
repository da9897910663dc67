"""ActNorm: data-dependent initialization (eager, tf.function, two replicas), checkpoints."""

import numpy as np
import pytest
import tensorflow as tf

from tfnvp.bijectors import ActNorm, ActNormParameters


def _data(seed: int = 0) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    # Per-channel means and scales far from (0, 1).
    return tf.constant(rng.standard_normal((4, 3, 3, 2)) * [3.0, 0.5] + [2.0, -1.0], tf.float64)


def _assert_standardized(z: np.ndarray) -> None:
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-9)
    np.testing.assert_allclose(z.std(axis=(0, 1, 2)), 1.0, atol=1e-5)


@pytest.mark.parametrize("compiled", [False, True])
def test_first_training_inverse_standardizes_then_parameters_stay(compiled):
    params = ActNormParameters(2, dtype="float64")
    actnorm = ActNorm(params)
    inverse = tf.function(actnorm.inverse) if compiled else actnorm.inverse
    x = _data()
    # Evaluation mode never initializes: the identity.
    np.testing.assert_array_equal(inverse(tf.identity(x)).numpy(), x.numpy())
    assert params.initialized.numpy() == 0.0
    _assert_standardized(inverse(tf.identity(x), training=True).numpy())
    assert params.initialized.numpy() == 1.0
    first = [params.log_scale.numpy().copy(), params.bias.numpy().copy()]
    # Later training batches (other statistics) use the initialized parameters.
    inverse(_data(seed=1) * 5.0, training=True)
    np.testing.assert_array_equal(params.log_scale.numpy(), first[0])
    np.testing.assert_array_equal(params.bias.numpy(), first[1])
    ildj = actnorm.inverse_log_det_jacobian(x, event_ndims=3).numpy()
    np.testing.assert_allclose(ildj, 9 * first[0].sum(), rtol=1e-12)


def test_initialized_survives_a_checkpoint_and_is_not_redone(tmp_path):
    params = ActNormParameters(2, dtype="float64")
    ActNorm(params).inverse(_data(), training=True)
    params.log_scale.assign(params.log_scale + 0.25)  # As if trained after the init.
    trained = [params.log_scale.numpy().copy(), params.bias.numpy().copy()]
    assert any("initialized" in v.path for v in params.non_trainable_weights)
    path = tf.train.Checkpoint(params=params).write(str(tmp_path / "ckpt"))

    restored = ActNormParameters(2, dtype="float64")
    tf.train.Checkpoint(params=restored).read(path).assert_consumed()
    assert restored.initialized.numpy() == 1.0
    ActNorm(restored).inverse(_data(seed=1), training=True)  # Must not re-initialize.
    np.testing.assert_array_equal(restored.log_scale.numpy(), trained[0])
    np.testing.assert_array_equal(restored.bias.numpy(), trained[1])


class _OwnKeysStrategy(tf.distribute.MirroredStrategy):
    # Every MirroredStrategy in a process numbers its collective ops from the
    # same keys, so an all-reduce of another test's strategy (e.g.
    # test_batch_norm's) with another shape would clash with ours.
    # `_collective_key_base` is TensorFlow's own hook for this ("only set
    # this in tests").
    _collective_key_base = 7000


@pytest.fixture(scope="module")
def strategy() -> tf.distribute.MirroredStrategy:
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    assert len(devices) == 2, "tests/conftest.py configures two logical CPUs"
    return _OwnKeysStrategy(devices)


@pytest.mark.parametrize("compiled", [False, True])
def test_two_replicas_initialize_from_the_global_batch(strategy, compiled):
    with strategy.scope():
        params = ActNormParameters(2, dtype="float64")
    actnorm = ActNorm(params)
    x = _data()
    halves = tf.split(x, 2)
    inputs = strategy.experimental_distribute_values_from_function(
        lambda ctx: halves[ctx.replica_id_in_sync_group])

    def step(batch):
        return strategy.run(lambda b: actnorm.inverse(b, training=True), args=(batch,))

    if compiled:
        step = tf.function(step)

    outputs = strategy.experimental_local_results(step(inputs))
    # Both replicas used the statistics of the whole (global) batch.
    _assert_standardized(np.concatenate([o.numpy() for o in outputs]))
    np.testing.assert_allclose(params.bias.numpy(), -x.numpy().mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(params.log_scale.numpy(),
                               -np.log(x.numpy().std(axis=(0, 1, 2)) + 1e-6), rtol=1e-12)
    for variable in (params.log_scale, params.bias, params.initialized):
        copies = [c.numpy() for c in variable.value.values]
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1])
    assert params.initialized.numpy() == 1.0


def test_log_det_and_errors():
    params = ActNormParameters(3, dtype="float64")
    params.log_scale.assign([0.5, -1.0, 0.25])
    actnorm = ActNorm(params)
    x = tf.zeros((2, 5, 4, 3), tf.float64)
    np.testing.assert_allclose(actnorm.inverse_log_det_jacobian(x, event_ndims=3).numpy(),
                               [20 * -0.25] * 2)
    np.testing.assert_allclose(actnorm.forward_log_det_jacobian(x, event_ndims=3).numpy(),
                               [20 * 0.25] * 2)
    with pytest.raises(ValueError, match="ActNorm over 3 channels"):
        actnorm.inverse(tf.zeros((2, 4, 4, 2), tf.float64))
    with pytest.raises(ValueError, match="channels must be positive"):
        ActNormParameters(0)


def test_modes_are_call_arguments_and_never_served_from_each_others_cache():
    params = ActNormParameters(2, dtype="float64")
    actnorm = ActNorm(params)
    x = _data()
    context = tf.ones((4, 3), tf.float64)  # Accepted and ignored.
    # Sampling never initializes, whatever the mode.
    actnorm.forward(x, training=True, context=context)
    assert params.initialized.numpy() == 0.0
    # The same tensor object first in evaluation mode (identity, cached by TFP) ...
    np.testing.assert_array_equal(actnorm.inverse(x).numpy(), x.numpy())
    # ... then in training mode: a different cache key, so the initialization runs.
    _assert_standardized(actnorm.inverse(x, training=True, context=context).numpy())
    assert params.initialized.numpy() == 1.0
