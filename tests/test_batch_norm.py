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


def _offset_batch(ratio, dtype=tf.float64):
    """A 64x16x16x3 batch whose channels have mean/std = ``ratio`` (issue 30's case)."""
    rng = np.random.default_rng(3)
    std = np.array([0.5, 2.0, 7.0])
    return tf.constant(ratio * std + std * rng.normal(size=(64, 16, 16, 3)), dtype)


@pytest.mark.parametrize("ratio", [10.0, 60.0, 1000.0])
def test_float32_batch_variance_is_stable_at_large_mean_over_std(ratio):
    """The float32 training-mode log-det and output agree with float64 where the one-pass
    E[x^2] - E[x]^2 was off by 0.18 nats (ratio 10) and 3.5 nats (ratio 60) per image."""
    x = _offset_batch(ratio)
    results = {}
    for dtype in (tf.float32, tf.float64):
        bn = BatchNorm(BatchNormStatistics(3, dtype=dtype.name))
        v = tf.cast(x, dtype)
        results[dtype] = (bn.inverse(v, training=True).numpy(),
                          bn.inverse_log_det_jacobian(v, event_ndims=3, training=True).numpy())
    y32, ildj32 = results[tf.float32]
    y64, ildj64 = results[tf.float64]
    xs = x.numpy().reshape(-1, 3)
    np.testing.assert_allclose(ildj64, -0.5 * 256 * np.log(xs.var(0) + 1e-4).sum(), rtol=1e-12)
    np.testing.assert_allclose(ildj32, ildj64, atol=0.02)  # Of about -1,000 nats.
    np.testing.assert_allclose(y32, y64, atol=2e-3 * ratio / 10)


def test_float64_batch_moments_unchanged_and_gradient_exact():
    """Where float64 needs no stabilizing, the two-pass moments are the one-pass ones to
    1e-10, and the log-det's gradient is that of numpy's exact formula."""
    from tfnvp.bijectors.batch_norm import _batch_moments

    x = _offset_batch(2.0)
    mean, variance = _batch_moments(x)
    xs = x.numpy().reshape(-1, 3)
    one_pass = (xs ** 2).mean(0) - xs.mean(0) ** 2
    np.testing.assert_allclose(mean.numpy(), xs.mean(0), rtol=1e-12)
    np.testing.assert_allclose(variance.numpy(), one_pass, rtol=1e-10)
    bn = BatchNorm(BatchNormStatistics(3, dtype="float64"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        ildj = tf.reduce_sum(bn.inverse_log_det_jacobian(x, event_ndims=3, training=True))
    # d/dx of -1/2 * 64 * 256 * sum_c log(v_c + eps), v_c = mean((x - mu_c)^2).
    n = xs.shape[0]
    expected = -0.5 * 64 * 256 * 2 * (xs - xs.mean(0)) / n / (xs.var(0) + 1e-4)
    np.testing.assert_allclose(tape.gradient(ildj, x).numpy().reshape(-1, 3), expected,
                               rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_conditioner_batch_normalization_is_stable_at_large_mean_over_std(dtype):
    """The conditioners' BatchNormalization (float32: the fused kernel; float64: Keras'
    two-pass moments) normalizes a batch with mean/std = 60 as float64 does."""
    from tfnvp.nets.batch_norm import BatchNormalization

    x = _offset_batch(60.0)
    layer = BatchNormalization(dtype=dtype)
    y = layer(tf.cast(x, dtype), training=True).numpy()
    xs = x.numpy().reshape(-1, 3)
    expected = (xs - xs.mean(0)) / np.sqrt(xs.var(0) + layer.epsilon)
    np.testing.assert_allclose(y.reshape(-1, 3), expected, atol=2e-3 if dtype == "float32" else 1e-10)
    np.testing.assert_allclose(layer.moving_variance.numpy(), xs.var(0),
                               rtol=1e-4 if dtype == "float32" else 1e-10)
