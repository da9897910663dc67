"""Tests for tfnvp.bijectors.piecewise_linear against independent computations."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnvp.bijectors.piecewise_linear import PiecewiseLinear, PiecewiseLinearParams
from tfnvp.experiments import toy_data
from tfnvp.models.piecewise_linear_flow import PiecewiseLinearFlow

X_MIN, X_MAX = -1.5, 2.0


def _random_params(num_bins: int, seed: int) -> tuple[float, np.ndarray]:
    rng = np.random.default_rng(seed)
    return float(rng.normal()), rng.normal(scale=0.8, size=num_bins)


def _make_bijector(num_bins: int, seed: int = 0, **kwargs) -> PiecewiseLinear:
    alpha, xi = _random_params(num_bins, seed)
    params = (tf.constant(alpha, tf.float64), tf.constant(xi, tf.float64))
    return PiecewiseLinear(num_bins, X_MIN, X_MAX, params, **kwargs)


def _reference_data_to_latent(x: np.ndarray, alpha: float, xi: np.ndarray) -> np.ndarray:
    """f(x) as α + a sum of clipped ramps, one per bin, plus the end-bin extensions."""
    w = (X_MAX - X_MIN) / len(xi)
    slopes = np.exp(xi) / w
    left_edges = X_MIN + w * np.arange(len(xi))
    inside = np.clip(x[:, None] - left_edges[None, :], 0.0, w) @ slopes
    below = slopes[0] * np.minimum(x - X_MIN, 0.0)
    above = slopes[-1] * np.maximum(x - X_MAX, 0.0)
    return alpha + inside + below + above


def _test_points(num_bins: int, rng: np.random.Generator) -> np.ndarray:
    """Random points in and out of [X_MIN, X_MAX], plus every bin edge exactly."""
    edges = X_MIN + (X_MAX - X_MIN) / num_bins * np.arange(num_bins + 1)
    return np.concatenate([rng.uniform(X_MIN - 3.0, X_MAX + 3.0, size=200), edges, [-1e3, 1e3]])


def _maybe_function(fn, use_tf_function: bool):
    return tf.function(fn) if use_tf_function else fn


@pytest.mark.parametrize("num_bins", [1, 7])
def test_inverse_matches_reference_map_inside_and_outside(num_bins: int) -> None:
    bijector = _make_bijector(num_bins)
    alpha, xi = _random_params(num_bins, 0)
    x = _test_points(num_bins, np.random.default_rng(1))
    z = bijector.inverse(tf.constant(x)).numpy()
    np.testing.assert_allclose(z, _reference_data_to_latent(x, alpha, xi), rtol=1e-12, atol=1e-9)
    # Knots are y_0 = α, y_k = α + Σ_{j<=k} exp(ξ_j).
    expected_knots = alpha + np.concatenate([[0.0], np.cumsum(np.exp(xi))])
    np.testing.assert_allclose(bijector.knots().numpy(), expected_knots, rtol=1e-12)


@pytest.mark.parametrize("use_tf_function", [False, True])
@pytest.mark.parametrize("num_bins", [1, 7])
def test_round_trips_including_knots_and_outside(num_bins: int, use_tf_function: bool) -> None:
    bijector = _make_bijector(num_bins, seed=2)
    forward = _maybe_function(bijector.forward, use_tf_function)
    inverse = _maybe_function(bijector.inverse, use_tf_function)
    rng = np.random.default_rng(3)
    x = _test_points(num_bins, rng)
    knots = bijector.knots().numpy()
    z = np.concatenate([rng.uniform(knots[0] - 5.0, knots[-1] + 5.0, size=200), knots, [-1e3, 1e3]])
    # tf.identity between the two directions: TFP's cache would otherwise
    # answer forward(inverse(c)) with c itself.
    np.testing.assert_allclose(forward(tf.identity(inverse(tf.constant(x)))).numpy(), x,
                               rtol=0, atol=1e-9)
    np.testing.assert_allclose(inverse(tf.identity(forward(tf.constant(z)))).numpy(), z,
                               rtol=0, atol=1e-9)
    # The latent knots are the images of the bin edges.
    edges = np.linspace(X_MIN, X_MAX, num_bins + 1)
    np.testing.assert_allclose(forward(tf.constant(knots)).numpy(), edges, atol=1e-9)


@pytest.mark.parametrize("use_tf_function", [False, True])
def test_log_det_jacobians_match_autodiff(use_tf_function: bool) -> None:
    num_bins = 7
    bijector = _make_bijector(num_bins, seed=4)
    rng = np.random.default_rng(5)
    # Derivatives jump at knots, so compare at points away from them.
    x = rng.uniform(X_MIN - 3.0, X_MAX + 3.0, size=300)
    edges = np.linspace(X_MIN, X_MAX, num_bins + 1)
    x = tf.constant(x[np.min(np.abs(x[:, None] - edges[None, :]), axis=1) > 1e-6])
    z = bijector.inverse(x)

    def derivatives(x: tf.Tensor, z: tf.Tensor):
        # Fresh tensors, so that the bijector cache cannot bypass the tape.
        x, z = tf.identity(x), tf.identity(z)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, z])
            fx, gz = bijector.inverse(x), bijector.forward(z)
        # Elementwise maps: the gradient of the sum is the pointwise derivative.
        return (
            tape.gradient(fx, x),
            tape.gradient(gz, z),
            bijector.inverse_log_det_jacobian(x, event_ndims=0),
            bijector.forward_log_det_jacobian(z, event_ndims=0),
        )

    dz_dx, dx_dz, ildj, fldj = _maybe_function(derivatives, use_tf_function)(x, z)
    np.testing.assert_allclose(ildj.numpy(), np.log(np.abs(dz_dx.numpy())), atol=1e-6)
    np.testing.assert_allclose(fldj.numpy(), np.log(np.abs(dx_dz.numpy())), atol=1e-6)
    np.testing.assert_allclose(fldj.numpy(), -ildj.numpy(), atol=1e-12)
    # Outside [x_min, x_max] the slope is that of the nearest end bin.
    _, xi = _random_params(num_bins, 4)
    log_w = math.log((X_MAX - X_MIN) / num_bins)
    outside_points = tf.constant([X_MIN - 2.0, X_MAX + 2.0], tf.float64)
    outside = bijector.inverse_log_det_jacobian(outside_points, event_ndims=0)
    np.testing.assert_allclose(outside.numpy(), [xi[0] - log_w, xi[-1] - log_w], rtol=1e-12)


def test_event_ndims_sums_log_det_and_keeps_shape() -> None:
    bijector = _make_bijector(5, seed=6)
    x = tf.constant(np.random.default_rng(7).uniform(-4.0, 4.0, size=(3, 4, 2)))
    assert bijector.inverse(x).shape == x.shape
    elementwise = bijector.inverse_log_det_jacobian(x, event_ndims=0)
    summed = bijector.inverse_log_det_jacobian(x, event_ndims=1)
    np.testing.assert_allclose(summed.numpy(), elementwise.numpy().sum(-1), rtol=1e-12)


def test_flow_model_owns_all_trainable_variables() -> None:
    model = PiecewiseLinearFlow(6, X_MIN, X_MAX)
    names = sorted(v.path.split("/")[-1] for v in model.trainable_variables)
    assert names == ["alpha", "xi"]
    x = tf.constant([-3.0, 0.1, 1.9, 5.0])
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    # Default init: affine map of [x_min, x_max] onto [-3, 3].
    ends = model.bijector.inverse([X_MIN, X_MAX]).numpy()
    np.testing.assert_allclose(ends, [-3.0, 3.0], atol=1e-5)


def test_training_matches_true_entropy_of_gaussian_mixture() -> None:
    x_train = toy_data.gaussian_mixture_1d(10_000, seed=10)
    x_test = toy_data.gaussian_mixture_1d(10_000, seed=11)
    entropy = -float(np.mean(toy_data.gaussian_mixture_1d_log_prob(x_test)))
    model = PiecewiseLinearFlow(32, x_min=-5.0, x_max=6.0)
    optimizer = keras.optimizers.Adam(learning_rate=0.05)
    x_train_t, x_test_t = tf.constant(x_train), tf.constant(x_test)

    def held_out_nll() -> float:
        # Same tensor before and after training: catches stale bijector caches.
        return -float(tf.reduce_mean(model(x_test_t)))

    @tf.function
    def train_step() -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model(x_train_t))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    initial_nll = held_out_nll()
    for _ in range(300):
        train_step()
    nll = held_out_nll()
    print(f"held-out NLL {nll:.4f} nats (initial {initial_nll:.4f}), "
          f"true entropy {entropy:.4f} nats")
    assert initial_nll - entropy > 0.05  # the criterion is not met without training
    assert abs(nll - entropy) < 0.05


@pytest.mark.parametrize("method", ["forward", "inverse"])
def test_nan_input_raises_with_validate_args(method: str) -> None:
    bijector = _make_bijector(4, validate_args=True)
    bad = tf.constant([0.5, np.nan], tf.float64)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        getattr(bijector, method)(bad)
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        getattr(bijector, f"{method}_log_det_jacobian")(bad, event_ndims=0)


def test_nan_propagates_without_validate_args() -> None:
    bijector = _make_bijector(4)
    out = bijector.inverse(tf.constant([0.5, np.nan], tf.float64)).numpy()
    assert np.isfinite(out[0]) and np.isnan(out[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_bins=0), "num_bins"),
        (dict(num_bins=-3), "num_bins"),
        (dict(num_bins=2.5), "num_bins"),
        (dict(x_min=1.0, x_max=1.0), "x_min"),
        (dict(x_min=2.0, x_max=-2.0), "x_min"),
        (dict(x_min=-np.inf), "x_min"),
        (dict(params=(0.0, np.zeros(3))), "xi"),
        (dict(params=(np.zeros(2), np.zeros(4))), "alpha"),
    ],
)
def test_bad_constructor_args_raise_value_error(kwargs: dict, match: str) -> None:
    args = dict(num_bins=4, x_min=-1.0, x_max=1.0, params=(0.0, np.zeros(4)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        PiecewiseLinear(**args)


def test_params_layer_rejects_bad_num_bins() -> None:
    with pytest.raises(ValueError, match="num_bins"):
        PiecewiseLinearParams(0)
