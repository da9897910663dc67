"""BatchNorm bijector: exactness, statistics, modes, replicas."""

import numpy as np
import pytest
import tensorflow as tf

from tfnvp.bijectors import BatchNorm, BatchNormStatistics

from bijector_checks import assert_exact_bijector


def _stats(channels=3, seed=0):
    stats = BatchNormStatistics(channels, dtype="float64")
    rng = np.random.default_rng(seed)
    stats.moving_mean.assign(rng.normal(size=channels))
    stats.moving_variance.assign(rng.uniform(0.3, 3.0, size=channels))
    return stats


def test_exact_against_numerical_jacobian_in_evaluation_mode():
    bn = BatchNorm(_stats())
    z = tf.random.normal((2, 2, 3, 3), dtype=tf.float64)
    assert_exact_bijector(bn, z, event_ndims=3)


def test_vector_events():
    bn = BatchNorm(_stats(4), event_ndims=1)
    assert_exact_bijector(bn, tf.random.normal((5, 4), dtype=tf.float64), event_ndims=1)


def test_training_uses_batch_statistics_and_updates_running_averages():
    stats = _stats()
    bn = BatchNorm(stats, momentum=0.9, epsilon=1e-4)
    x = 5.0 + 2.0 * tf.random.normal((16, 4, 4, 3), dtype=tf.float64)
    y = bn.inverse(x, training=True).numpy()
    xs = x.numpy().reshape(-1, 3)
    mean, var = xs.mean(0), xs.var(0)
    np.testing.assert_allclose(y.reshape(-1, 3), (xs - mean) / np.sqrt(var + 1e-4), atol=1e-10)
    expected_ildj = -0.5 * 16 * np.log(var + 1e-4).sum()
    np.testing.assert_allclose(bn.inverse_log_det_jacobian(x, event_ndims=3, training=True).numpy(),
                               np.full(16, expected_ildj), rtol=1e-12)
    # Updated exactly once although inverse and its log-det were both asked for;
    # debiased, the first update gives the batch's statistics exactly.
    assert float(stats.num_updates) == 1.0
    np.testing.assert_allclose(stats.moving_mean.numpy(), mean, atol=1e-12)
    np.testing.assert_allclose(stats.moving_variance.numpy(), var, atol=1e-12)
    # The second: Adam's bias-corrected average (r_n = 0.9 r_{n-1} + 0.1 b_n) / (1 - 0.9^n).
    x2 = -3.0 + 0.5 * tf.random.normal((16, 4, 4, 3), dtype=tf.float64)
    bn.inverse(x2, training=True)
    xs2 = x2.numpy().reshape(-1, 3)
    for value, first, second in ((stats.moving_mean, mean, xs2.mean(0)),
                                 (stats.moving_variance, var, xs2.var(0))):
        raw = 0.9 * (0.1 * first) + 0.1 * second
        np.testing.assert_allclose(value.numpy(), raw / (1 - 0.9**2), rtol=1e-12)


def test_appendix_e_running_average_in_training():
    stats = _stats()
    stats.num_updates.assign(4.0)  # As after 4 debiased updates: the 5th has weight f.
    old_mean, old_var = stats.moving_mean.numpy(), stats.moving_variance.numpy()
    f = 0.2 / (1 - 0.8**5)
    bn = BatchNorm(stats, momentum=0.8, epsilon=1e-4, running_average_in_training=True)
    x = 1.0 + tf.random.normal((8, 2, 2, 3), dtype=tf.float64)
    y = bn.inverse(x, training=True).numpy()
    xs = x.numpy().reshape(-1, 3)
    mean = old_mean + f * (xs.mean(0) - old_mean)
    var = old_var + f * (xs.var(0) - old_var)
    np.testing.assert_allclose(y.reshape(-1, 3), (xs - mean) / np.sqrt(var + 1e-4), atol=1e-10)


def test_mode_switch_is_not_served_from_cache():
    stats = _stats()
    bn = BatchNorm(stats, momentum=0.0)
    x = 4.0 + tf.random.normal((8, 2, 2, 3), dtype=tf.float64)
    y_train = bn.inverse(x, training=True)  # Held, so its cache entry stays alive.
    y_eval = bn.inverse(x, training=False)
    # momentum=0: the running averages now equal the batch statistics, and
    # evaluation uses them -- the same numbers, but computed anew (not the
    # training-mode tensor from the cache).
    assert y_eval is not y_train
    np.testing.assert_allclose(y_eval.numpy(), y_train.numpy(), atol=1e-6)
    stats.moving_mean.assign(stats.moving_mean + 1.0)
    y_shifted = bn.inverse(tf.identity(x), training=False)
    assert np.abs(y_shifted.numpy() - y_eval.numpy()).min() > 0.1


def test_forward_uses_running_statistics_in_training_mode():
    stats = _stats()
    bn = BatchNorm(stats)
    z = tf.random.normal((4, 2, 2, 3), dtype=tf.float64)
    x = bn.forward(z, training=True).numpy()
    expected = z.numpy() * np.sqrt(stats.moving_variance.numpy() + 1e-4) + stats.moving_mean.numpy()
    np.testing.assert_allclose(x, expected, atol=1e-12)


def test_statistics_are_all_reduced_across_replicas():
    devices = [d.name for d in tf.config.list_logical_devices("CPU")[:2]]
    assert len(devices) == 2, "conftest configures two logical CPUs"
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        stats = BatchNormStatistics(2, dtype="float64")
    bn = BatchNorm(stats, momentum=0.5)
    # Replica statistics differ a lot; each must normalize with the global ones.
    x = tf.concat([tf.random.normal((3, 3, 3, 2), dtype=tf.float64),
                   10.0 + 3.0 * tf.random.normal((3, 3, 3, 2), dtype=tf.float64)], axis=0)
    shards = strategy.experimental_distribute_values_from_function(
        lambda ctx: x[3 * ctx.replica_id_in_sync_group: 3 * (ctx.replica_id_in_sync_group + 1)])
    y = strategy.run(tf.function(lambda v: bn.inverse(v, training=True)), args=(shards,))
    y = np.concatenate([t.numpy() for t in strategy.experimental_local_results(y)])
    xs = x.numpy().reshape(-1, 2)
    np.testing.assert_allclose(y.reshape(-1, 2), (xs - xs.mean(0)) / np.sqrt(xs.var(0) + 1e-4),
                               atol=1e-10)
    # One (debiased) update with the global batch's mean, on both replicas.
    for value in strategy.experimental_local_results(stats.moving_mean):
        np.testing.assert_allclose(value.numpy(), xs.mean(0), atol=1e-10)
    assert all(float(v.numpy()) == 1.0
               for v in strategy.experimental_local_results(stats.num_updates))


def test_bad_arguments():
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(_stats(), momentum=1.0)
    with pytest.raises(ValueError, match="epsilon"):
        BatchNorm(_stats(), epsilon=0.0)
