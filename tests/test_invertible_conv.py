"""InvertibleConv1x1: LU kernel vs slogdet, random-rotation init, exact inverse, gradients."""

import numpy as np
import pytest
import tensorflow as tf

from tfnvp.bijectors import InvertibleConv1x1, InvertibleConv1x1Weights

from bijector_checks import assert_exact_bijector, perturb_weights


def _perturbed(channels: int = 4, seed: int = 0) -> InvertibleConv1x1Weights:
    weights = InvertibleConv1x1Weights(channels, seed=seed, dtype="float64")
    perturb_weights([weights], scale=0.3, seed=seed)
    return weights


def test_initial_kernel_is_a_seeded_rotation():
    kernel = InvertibleConv1x1Weights(5, seed=3, dtype="float64").kernel(tf.float64).numpy()
    np.testing.assert_allclose(kernel @ kernel.T, np.eye(5), atol=1e-12)
    again = InvertibleConv1x1Weights(5, seed=3, dtype="float64").kernel(tf.float64).numpy()
    np.testing.assert_array_equal(kernel, again)
    other = InvertibleConv1x1Weights(5, seed=4, dtype="float64").kernel(tf.float64).numpy()
    assert np.abs(kernel - other).max() > 0.1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_log_det_equals_slogdet_and_inverse_kernel_inverts(seed):
    weights = _perturbed(channels=6, seed=seed)
    kernel = weights.kernel(tf.float64).numpy()
    sign, log_abs_det = np.linalg.slogdet(kernel)
    assert abs(log_abs_det) > 0.1  # Perturbed far from a rotation.
    np.testing.assert_allclose(weights.log_abs_det(tf.float64).numpy(), log_abs_det, atol=1e-12)
    np.testing.assert_allclose(kernel @ weights.inverse_kernel(tf.float64).numpy(), np.eye(6),
                               atol=1e-12)
    conv = InvertibleConv1x1(weights)
    x = tf.zeros((2, 3, 5, 6), tf.float64)
    np.testing.assert_allclose(conv.inverse_log_det_jacobian(x, event_ndims=3).numpy(),
                               [15 * log_abs_det] * 2, atol=1e-10)


def test_exact_against_numerical_jacobian():
    conv = InvertibleConv1x1(_perturbed())
    z = tf.random.normal((3, 4, 4, 4), dtype=tf.float64)
    assert_exact_bijector(conv, z, event_ndims=3)


def test_every_trained_factor_gets_a_gradient_and_fixed_ones_are_not_trained():
    weights = _perturbed()
    conv = InvertibleConv1x1(weights)
    x = tf.random.normal((2, 3, 3, 4), dtype=tf.float64)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(conv.inverse(x) ** 2) - tf.reduce_sum(
            conv.inverse_log_det_jacobian(x, event_ndims=3))
    names = [v.path.split("/")[-1] for v in weights.trainable_weights]
    assert sorted(names) == ["log_abs_s", "lower", "upper"]
    for name, grad in zip(names, tape.gradient(loss, weights.trainable_weights)):
        assert grad is not None and np.abs(grad.numpy()).max() > 0, name
    assert sorted(v.path.split("/")[-1] for v in weights.non_trainable_weights) == [
        "permutation", "sign_s"]


def test_wrong_channels_is_a_clear_error():
    conv = InvertibleConv1x1(InvertibleConv1x1Weights(4, seed=0))
    with pytest.raises(ValueError, match="InvertibleConv1x1 over 4 channels"):
        conv.inverse(tf.zeros((1, 2, 2, 3)))


def test_training_and_context_are_accepted_and_ignored():
    conv = InvertibleConv1x1(_perturbed())
    x = tf.random.normal((2, 3, 3, 4), dtype=tf.float64)
    context = tf.ones((2, 5), tf.float64)
    np.testing.assert_array_equal(conv.inverse(x, training=True, context=context).numpy(),
                                  conv.inverse(tf.identity(x)).numpy())
    np.testing.assert_array_equal(
        conv.forward_log_det_jacobian(x, event_ndims=3, training=True, context=context).numpy(),
        conv.forward_log_det_jacobian(tf.identity(x), event_ndims=3).numpy())
