"""LogitPreprocess: exactness, the paper's formula, range checks."""

import math

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from tfnvp.bijectors import LogitPreprocess

from bijector_checks import assert_exact_bijector


def test_exact_against_numerical_jacobian():
    z = 2.0 * tf.random.normal((3, 2, 2, 2), dtype=tf.float64)
    assert_exact_bijector(LogitPreprocess(), z, event_ndims=3)


def test_matches_section_4_1_formula():
    alpha = 0.05
    x = np.array([0.0, 0.5, 77.3, 128.0, 255.999], dtype=np.float64)
    bij = LogitPreprocess(alpha)
    p = alpha + (1 - alpha) * x / 256.0
    np.testing.assert_allclose(bij.inverse(x).numpy(), scipy.special.logit(p), rtol=1e-12)
    expected_ldj = np.log((1 - alpha) / 256.0) - np.log(p) - np.log1p(-p)
    np.testing.assert_allclose(bij.inverse_log_det_jacobian(x, event_ndims=0).numpy(),
                               expected_ldj, rtol=1e-12)


def test_edge_inputs_are_finite():
    bij = LogitPreprocess()
    x = tf.constant([0.0, np.nextafter(256.0, 0.0)], tf.float64)
    assert np.all(np.isfinite(bij.inverse(x).numpy()))
    assert np.all(np.isfinite(bij.inverse_log_det_jacobian(x, event_ndims=0).numpy()))
    z = tf.constant([-30.0, 30.0], tf.float64)
    x_out = bij.forward(z).numpy()
    assert np.all((x_out >= -256 * 0.05 / 0.95 - 1e-9) & (x_out <= 256.0 + 1e-9))
    assert np.all(np.isfinite(bij.forward_log_det_jacobian(z, event_ndims=0).numpy()))


@pytest.mark.parametrize("value,message", [
    (-0.5, "negative"), (256.0, ">= 256"), (math.nan, "NaN")])
def test_validate_args_names_the_problem(value, message):
    bij = LogitPreprocess(validate_args=True)
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        bij.inverse(tf.constant([1.0, value], tf.float64))


def test_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        LogitPreprocess(alpha=1.0)
