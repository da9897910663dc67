"""LogitPreprocess: exactness, the paper's formula, range checks."""

import math

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from tfnvp.bijectors import LogitPreprocess

from bijector_checks import assert_exact_bijector


@pytest.mark.parametrize("symmetric", [True, False])
def test_exact_against_numerical_jacobian(symmetric):
    z = 2.0 * tf.random.normal((3, 2, 2, 2), dtype=tf.float64)
    assert_exact_bijector(LogitPreprocess(symmetric=symmetric), z, event_ndims=3)


@pytest.mark.parametrize("symmetric,width", [(True, 0.9), (False, 0.95)])
def test_matches_formula(symmetric, width):
    """Symmetric: p = alpha + (1 - 2 alpha) x/256 (the release); asymmetric: section 4.1's."""
    alpha = 0.05
    x = np.array([0.0, 0.5, 77.3, 128.0, 255.999], dtype=np.float64)
    bij = LogitPreprocess(alpha, symmetric=symmetric)
    p = alpha + width * x / 256.0
    np.testing.assert_allclose(bij.inverse(x).numpy(), scipy.special.logit(p), rtol=1e-12)
    expected_ldj = np.log(width / 256.0) - np.log(p) - np.log1p(-p)
    np.testing.assert_allclose(bij.inverse_log_det_jacobian(x, event_ndims=0).numpy(),
                               expected_ldj, rtol=1e-12)
    # The log-det is the derivative of the map (autodiff, elementwise).
    xs = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xs)
        y = bij.inverse(xs)
    np.testing.assert_allclose(np.log(tape.gradient(y, xs).numpy()), expected_ldj, rtol=1e-10)


def test_symmetric_map_is_symmetric_and_bounded():
    """Pixel values x and 256 - x map to opposite logits; the top stays at logit(1 - alpha)."""
    bij = LogitPreprocess(0.05)
    x = tf.constant([0.0, 0.3, 17.0, 100.0], tf.float64)
    np.testing.assert_allclose(bij.inverse(256.0 - x).numpy(), -bij.inverse(x).numpy(), rtol=1e-12)
    top = bij.inverse(tf.constant([np.nextafter(256.0, 0.0)], tf.float64)).numpy()
    np.testing.assert_allclose(top, scipy.special.logit(0.95), rtol=1e-9)
    asymmetric_top = LogitPreprocess(0.05, symmetric=False).inverse(
        tf.constant([np.nextafter(256.0, 0.0)], tf.float64)).numpy()
    assert asymmetric_top > 30.0  # unbounded as x -> 256


def test_edge_inputs_are_finite():
    bij = LogitPreprocess()
    x = tf.constant([0.0, np.nextafter(256.0, 0.0)], tf.float64)
    assert np.all(np.isfinite(bij.inverse(x).numpy()))
    assert np.all(np.isfinite(bij.inverse_log_det_jacobian(x, event_ndims=0).numpy()))
    z = tf.constant([-30.0, 30.0], tf.float64)
    x_out = bij.forward(z).numpy()
    # Symmetric map: forward ranges over 256 * (-alpha, 1 - alpha) / (1 - 2 alpha).
    assert np.all((x_out >= -256 * 0.05 / 0.9 - 1e-9) & (x_out <= 256 * 0.95 / 0.9 + 1e-9))
    assert np.all(np.isfinite(bij.forward_log_det_jacobian(z, event_ndims=0).numpy()))


@pytest.mark.parametrize("value,message", [
    (-0.5, "negative"), (256.0, ">= 256"), (math.nan, "NaN")])
def test_validate_args_names_the_problem(value, message):
    bij = LogitPreprocess(validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        bij.inverse(tf.constant([1.0, value], tf.float64))


def test_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        LogitPreprocess(alpha=1.0, symmetric=False)
    with pytest.raises(ValueError, match=r"alpha must lie in \(0, 0.5\)"):
        LogitPreprocess(alpha=0.5)
