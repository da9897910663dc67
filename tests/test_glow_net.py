"""Glow's coupling (AffineCoupling + GlowAffineHead) and its GlowNet conditioner."""

import numpy as np
import pytest
import tensorflow as tf

from tfnvp.bijectors import glow_coupling
from tfnvp.nets.glow_net import GlowAffineHead, GlowNet

from bijector_checks import perturb_weights

SIGMOID_2 = 1.0 / (1.0 + np.exp(-2.0))


def _head(channels: int = 4, parity: int = 0, context_channels: int = 0) -> GlowAffineHead:
    body = GlowNet(channels, hidden_channels=8, context_channels=context_channels, dtype="float64")
    return GlowAffineHead(body, channels, parity=parity, dtype="float64")


def _x(shape=(3, 4, 4, 4)) -> tf.Tensor:
    return tf.random.normal(shape, dtype=tf.float64)


def test_new_coupling_is_glows_initial_contraction():
    coupling = glow_coupling(_head())
    x = _x()
    y = coupling.inverse(x).numpy()
    np.testing.assert_array_equal(y[..., :2], x.numpy()[..., :2])
    np.testing.assert_allclose(y[..., 2:], x.numpy()[..., 2:] * SIGMOID_2, rtol=1e-14)
    np.testing.assert_allclose(coupling.inverse_log_det_jacobian(x, event_ndims=3).numpy(),
                               [16 * 2 * np.log(SIGMOID_2)] * 3, rtol=1e-14)


@pytest.mark.parametrize("parity", [0, 1])
def test_coupling_is_glows_formula(parity):
    head = _head(parity=parity)
    coupling = glow_coupling(head)
    x = _x()
    coupling.inverse(x)  # Builds the layers.
    perturb_weights([head], scale=0.3)
    kept, free = (slice(0, 2), slice(2, 4)) if parity == 0 else (slice(2, 4), slice(0, 2))
    raw = head.body(x[..., kept]).numpy()
    t, h = raw[..., 0::2], raw[..., 1::2]
    scale = 1.0 / (1.0 + np.exp(-(h + 2.0)))
    y = coupling.inverse(tf.identity(x)).numpy()
    np.testing.assert_array_equal(y[..., kept], x.numpy()[..., kept])
    np.testing.assert_allclose(y[..., free], (x.numpy()[..., free] + t) * scale, rtol=1e-12)
    np.testing.assert_allclose(coupling.inverse_log_det_jacobian(tf.identity(x), event_ndims=3),
                               np.log(scale).sum(axis=(1, 2, 3)), rtol=1e-12)
    assert np.abs(t).min() < np.abs(t).max() and np.abs(t).max() > 1e-2  # Not vacuous.


def test_training_call_initializes_the_actnorms_and_every_weight_gets_a_gradient():
    head = _head(context_channels=3)
    x, context = _x((5, 4, 4, 4)), tf.one_hot([0, 1, 2, 0, 1], 3, dtype=tf.float64)
    head(x, training=True, context=context)
    body = head.body
    assert body.norm_in.initialized.numpy() == 1.0 and body.norm_hidden.initialized.numpy() == 1.0
    # The first actnorm standardized its (pre-context) input batch.
    pre = body.norm_in(body.conv_in(x[..., :2])).numpy()
    np.testing.assert_allclose(pre.std(axis=(0, 1, 2)), 1.0, atol=1e-4)
    # Perturbed: a new net's zero output layer would block the others' gradients.
    perturb_weights([head], scale=0.3)
    with tf.GradientTape() as tape:
        shift, log_scale = head(x, training=True, context=context)
        loss = tf.reduce_sum(shift ** 2) + tf.reduce_sum(log_scale)
    for v, g in zip(head.trainable_weights, tape.gradient(loss, head.trainable_weights)):
        assert g is not None and np.abs(g.numpy()).max() > 0, v.path


def test_context_changes_the_output_and_is_checked():
    head = _head(context_channels=2)
    x = _x((2, 4, 4, 4))
    one, other = tf.constant([[1.0, 0.0]] * 2, tf.float64), tf.constant([[0.0, 1.0]] * 2, tf.float64)
    head(x, context=one)
    perturb_weights([head], scale=0.3)
    assert np.abs((head(x, context=one)[0] - head(x, context=other)[0]).numpy()).max() > 1e-3
    with pytest.raises(ValueError, match="conditional"):
        head(x)
    with pytest.raises(ValueError, match="unconditional"):
        _head()(x, context=one)
    with pytest.raises(ValueError, match="even number of channels"):
        GlowAffineHead(GlowNet(3), channels=3)
