"""FactorOut: half the channels pass through, the rest go through the inner flow."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors import AffineCoupling, FactorOut, FusedChain, Squeeze
from tfnvp.nets import ResNet, ShiftAndLogScale

from bijector_checks import assert_exact_bijector, perturb_weights


def _inner(channels: int) -> tuple[FusedChain, ShiftAndLogScale]:
    net = ShiftAndLogScale(ResNet(8, 1, 2 * channels, dtype="float64"), channels, dtype="float64")
    chain = FusedChain([AffineCoupling(net, mask="checkerboard", parity=0),
                        tfp.bijectors.Scale(tf.constant(1.7, tf.float64))])
    chain.inverse(tf.zeros((1, 4, 4, channels), tf.float64))
    perturb_weights([net], scale=0.3)
    return chain, net


def test_exact_against_numerical_jacobian():
    inner, _ = _inner(2)
    z = tf.random.normal((2, 4, 4, 4), dtype=tf.float64)
    assert_exact_bijector(FactorOut(inner), z, event_ndims=3)


def test_first_half_leaves_unchanged_and_log_det_is_inner():
    inner, _ = _inner(2)
    x = tf.random.normal((3, 4, 4, 4), dtype=tf.float64)
    bij = FactorOut(inner)
    z = bij.inverse(x).numpy()
    np.testing.assert_array_equal(z[..., :2], x.numpy()[..., :2])
    np.testing.assert_allclose(z[..., 2:], inner.inverse(x[..., 2:]).numpy(), atol=1e-12)
    np.testing.assert_allclose(
        bij.inverse_log_det_jacobian(x, event_ndims=3).numpy(),
        inner.inverse_log_det_jacobian(x[..., 2:], event_ndims=3).numpy(), atol=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="forward_min_event_ndims=3"):
        FactorOut(tfp.bijectors.Exp())
    inner, _ = _inner(2)
    with pytest.raises(ValueError, match="even number of channels"):
        FactorOut(inner).inverse(tf.zeros((1, 4, 4, 3), tf.float64))


@pytest.mark.parametrize("order", ["space_to_depth", "checkerboard"])
def test_multiscale_composition_is_exact(order):
    """Squeeze -> FactorOut(inner) -> un-squeeze, as one scale of the model."""
    inner, _ = _inner(4)
    scale = FusedChain([Squeeze(order=order), FactorOut(inner),
                        tfp.bijectors.Invert(Squeeze(order=order))])
    z = tf.random.normal((2, 8, 8, 2), dtype=tf.float64)
    assert_exact_bijector(scale, z, event_ndims=3)


def test_checkerboard_factor_out_keeps_one_colour():
    """With the checkerboard squeeze the colour dy + dx = 1 leaves unchanged."""
    inner, _ = _inner(4)
    scale = FusedChain([Squeeze(order="checkerboard"), FactorOut(inner),
                        tfp.bijectors.Invert(Squeeze(order="checkerboard"))])
    x = tf.random.normal((2, 8, 8, 2), dtype=tf.float64)
    z = scale.inverse(x).numpy()
    rows, cols = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    odd = (rows + cols) % 2 == 1
    np.testing.assert_array_equal(z[:, odd], x.numpy()[:, odd])
    assert np.abs(z[:, ~odd] - x.numpy()[:, ~odd]).min() > 0  # the quincunx goes on
