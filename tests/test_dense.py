"""Tests of the dense Real NVP (tfnvp.models.dense) and its MLP conditioner (tfnvp.nets.mlp).

Exactness is checked against autodiff Jacobians of flows with random,
non-identity weights (a zero-initialized flow is the identity and would pass
trivially); the density is checked by fitting a Gaussian mixture whose
differential entropy is known.
"""

from __future__ import annotations

import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.experiments import toy_data
from tfnvp.bijectors.coupling import AffineCoupling
from tfnvp.models.dense import DenseRealNVP, random_half_mask
from tfnvp.nets.mlp import MLP
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale

DIM = 5


def _perturb(variables, rng: np.random.Generator, scale: float = 0.5) -> None:
    """Adds Gaussian noise to every variable (so shifts and log-scales are non-zero)."""
    for v in variables:
        v.assign(v + scale * rng.standard_normal(v.shape))


def _perturbed_model(batch_norm: bool, seed: int = 0, coupling: str = "affine") -> DenseRealNVP:
    model = DenseRealNVP(DIM, hidden_dim=16, depth=2, num_couplings=4, batch_norm=batch_norm,
                         seed=seed, dtype=tf.float64, coupling=coupling, mixture_components=3)
    rng = np.random.default_rng(seed + 100)
    _perturb(model.trainable_variables, rng)
    for stats in model.statistics:
        stats.moving_mean.assign(rng.standard_normal(DIM))
        stats.moving_variance.assign(rng.uniform(0.3, 3.0, DIM))
    return model


def _jacobian_log_det(fn, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(fn(x), log|det d fn(x) / dx|)`` per example via ``batch_jacobian``.

    ``fn`` gets a fresh tensor: a bijector's cache would otherwise return a
    result computed outside the tape.
    """
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(tf.identity(x))
    jacobian = tape.batch_jacobian(y, x)
    return y, tf.linalg.slogdet(jacobian)[1]


def _check_bijector(bijector, z: tf.Tensor, x: tf.Tensor) -> None:
    # forward (latent -> data): autodiff log-det vs. the bijector's, also on a
    # fresh tensor so the value does not just come from TFP's cache.
    out, log_det = _jacobian_log_det(bijector.forward, z)
    np.testing.assert_allclose(bijector.forward_log_det_jacobian(z, event_ndims=1), log_det,
                               atol=1e-6)
    np.testing.assert_allclose(
        bijector.forward_log_det_jacobian(tf.identity(z), event_ndims=1), log_det, atol=1e-6)
    assert np.max(np.abs(log_det)) > 0.1, "the test needs a non-volume-preserving flow"
    # inverse (data -> latent)
    _, log_det_inv = _jacobian_log_det(bijector.inverse, x)
    np.testing.assert_allclose(
        bijector.inverse_log_det_jacobian(tf.identity(x), event_ndims=1), log_det_inv, atol=1e-6)
    # Round trips on fresh tensors (TFP's cache would return the input itself).
    np.testing.assert_allclose(bijector.inverse(tf.identity(out)), z, atol=1e-9, rtol=0)
    np.testing.assert_allclose(bijector.forward(tf.identity(bijector.inverse(x))), x,
                               atol=1e-9, rtol=0)
    assert np.max(np.abs(out - z)) > 0.1, "the test needs a non-identity flow"


@pytest.mark.parametrize("parity", [0, 1])
def test_single_coupling_jacobian_and_inverse(parity: int) -> None:
    mask = random_half_mask(DIM, seed=1)
    net = ShiftAndLogScale(MLP(16, 2, 2 * DIM, dtype="float64"), DIM, dtype="float64")
    coupling = AffineCoupling(net, mask=mask, parity=parity, event_ndims=1)
    net(tf.zeros((1, DIM), tf.float64))
    _perturb(net.trainable_variables, np.random.default_rng(parity))
    rng = np.random.default_rng(7)
    z = tf.constant(rng.standard_normal((8, DIM)))
    x = tf.constant(2.0 * rng.standard_normal((8, DIM)))
    _check_bijector(coupling, z, x)
    # The kept half passes through unchanged (mask b = 1 at parity 0).
    kept = (mask == 1) if parity == 0 else (mask == 0)
    y = coupling.inverse(x)
    np.testing.assert_array_equal(y.numpy()[:, kept], x.numpy()[:, kept])
    assert np.all(np.abs(y.numpy()[:, ~kept] - x.numpy()[:, ~kept]) > 0)


@pytest.mark.parametrize("batch_norm,coupling", [(False, "affine"), (True, "affine"),
                                                 (True, "logistic_mixture")])
def test_flow_jacobian_inverse_and_density(batch_norm: bool, coupling: str) -> None:
    model = _perturbed_model(batch_norm, coupling=coupling)
    rng = np.random.default_rng(3)
    z = tf.constant(rng.standard_normal((8, DIM)))
    x = tf.constant(2.0 * rng.standard_normal((8, DIM)))
    _check_bijector(model.bijector, z, x)
    # Model API: decode/encode round trip and the change-of-variables density
    # log p(x) = log N(f(x); 0, I) + log|det df/dx| with an autodiff Jacobian.
    np.testing.assert_allclose(model.encode(model.decode(z)), z, atol=1e-9, rtol=0)
    latent, log_det = _jacobian_log_det(model.encode, x)
    base = tfp.distributions.MultivariateNormalDiag(tf.zeros(DIM, tf.float64))
    np.testing.assert_allclose(model.log_prob(x), base.log_prob(latent) + log_det, atol=1e-6)


def test_identity_at_initialization() -> None:
    model = DenseRealNVP(3, hidden_dim=8, depth=1, num_couplings=2, dtype=tf.float64)
    x = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_allclose(model.encode(x), x, atol=1e-12)
    expected = -0.5 * np.sum(x**2, -1) - 1.5 * np.log(2 * np.pi)
    np.testing.assert_allclose(model.log_prob(x), expected, atol=1e-12)


@pytest.mark.parametrize("batch_norm,coupling", [(False, "affine"), (True, "affine"),
                                                 (False, "logistic_mixture")])
def test_every_weight_gets_a_gradient(batch_norm: bool, coupling: str) -> None:
    model = _perturbed_model(batch_norm, seed=1, coupling=coupling)
    depth, couplings = 2, 4
    # log-scale factor (+ the mixture's location offsets) + (depth hidden + 1 output)
    # Dense kernels and biases.
    head = 1 if coupling == "affine" else 2
    assert len(model.trainable_variables) == couplings * (head + 2 * (depth + 1))
    x = tf.constant(np.random.default_rng(0).standard_normal((64, DIM)))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.nll(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    for v, g in zip(model.trainable_variables, grads):
        assert g is not None, f"no gradient for {v.path}"
        assert np.all(np.isfinite(g)), v.path
        assert np.max(np.abs(g)) > 0, f"zero gradient for {v.path}"


def test_logistic_mixture_coupling_config_and_clear_errors() -> None:
    model = DenseRealNVP(3, hidden_dim=8, depth=1, num_couplings=2, dtype=tf.float64,
                         coupling="logistic_mixture", mixture_components=5)
    config = model.get_config()
    assert (config["coupling"], config["mixture_components"]) == ("logistic_mixture", 5)
    # (3K + 2) parameters per coordinate from each MLP.
    assert model.conditioners[0].body.out_dim == (3 * 5 + 2) * 3
    assert DenseRealNVP.from_config(config).get_config() == config
    assert "coupling" not in DenseRealNVP(3).get_config()  # Affine configs are unchanged.
    with pytest.raises(ValueError, match="coupling must be one of"):
        DenseRealNVP(3, coupling="spline")
    with pytest.raises(ValueError, match="mixture_components"):
        DenseRealNVP(3, coupling="logistic_mixture", mixture_components=0)


def test_mask_config_and_alternation() -> None:
    model = DenseRealNVP(7, hidden_dim=8, depth=1, num_couplings=3, seed=5)
    config = model.get_config()
    np.testing.assert_array_equal(config["mask"], random_half_mask(7, 5))
    assert sum(config["mask"]) == 3
    assert not np.array_equal(random_half_mask(7, 5), random_half_mask(7, 6))
    parities = [b.parity for b in model.bijector.bijectors]
    assert parities == [0, 1, 0]
    clone = DenseRealNVP.from_config(config)
    clone.set_weights(model.get_weights())
    _perturb(model.trainable_variables, np.random.default_rng(0))
    clone.set_weights(model.get_weights())
    x = np.random.default_rng(1).standard_normal((5, 7)).astype(np.float32)
    np.testing.assert_allclose(clone.log_prob(x), model.log_prob(x), atol=1e-5)


def test_sample_shape_seed_and_support() -> None:
    model = _perturbed_model(batch_norm=False)
    a, b = model.sample(6, seed=[1, 2]), model.sample(6, seed=[1, 2])
    assert a.shape == (6, DIM) and a.dtype == tf.float64
    np.testing.assert_array_equal(a, b)
    assert np.all(np.isfinite(model.log_prob(a)))


def test_bad_inputs_raise_clear_errors() -> None:
    model = DenseRealNVP(2, hidden_dim=8, depth=1, num_couplings=2)
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 2\].*last dimension 3"):
        model.log_prob(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="rank"):
        model.log_prob(np.float32(1.0))
    with pytest.raises(TypeError, match="int32"):
        model.log_prob(np.zeros((4, 2), np.int32))
    with pytest.raises(ValueError, match=r"latents of shape \[\.\.\., 2\]"):
        model.decode(np.zeros((4, 5), np.float32))
    bad = np.zeros((4, 2), np.float32)
    bad[1, 0] = np.nan
    for method in (model.log_prob, model.encode, model.decode):
        with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
            method(bad)
    unchecked = DenseRealNVP(2, hidden_dim=8, depth=1, num_couplings=2, validate_args=False)
    assert np.isnan(unchecked.log_prob(bad).numpy()[1])
    with pytest.raises(ValueError, match="PiecewiseLinear"):
        DenseRealNVP(1)
    with pytest.raises(ValueError, match="mask"):
        DenseRealNVP(3, mask=[1, 1, 1])
    with pytest.raises(ValueError, match="dtype"):
        DenseRealNVP(2, dtype=tf.int32)


def test_mlp_layer() -> None:
    mlp = MLP(hidden_dim=8, depth=3, out_dim=6)
    out = mlp(tf.ones((4, 5)))
    assert out.shape == (4, 6)
    np.testing.assert_array_equal(out, 0.0)  # zero-initialized output layer
    assert len(mlp.trainable_variables) == 2 * 4
    assert mlp.hidden[0].activation is keras.activations.tanh
    assert MLP.from_config(mlp.get_config()).depth == 3
    with pytest.raises(ValueError, match="depth"):
        MLP(8, -1, 2)


def test_fits_gaussian_mixture_to_its_entropy() -> None:
    """Held-out NLL of an 8-component 2-D mixture (radius 2, sigma 0.5) within
    0.1 nats of the true differential entropy -mean log p_true(x_test)."""
    keras.utils.set_random_seed(0)
    x_train = tf.constant(toy_data.gaussian_mixture_2d(4096, seed=11))
    x_test = toy_data.gaussian_mixture_2d(20000, seed=12)
    entropy = float(-np.mean(toy_data.gaussian_mixture_2d_log_prob(x_test)))
    model = DenseRealNVP(2, hidden_dim=32, depth=2, num_couplings=8, seed=0)
    steps = 400
    optimizer = keras.optimizers.Adam(
        keras.optimizers.schedules.CosineDecay(1e-2, steps, alpha=0.02))

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.nll(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    start = time.time()
    for _ in range(steps):  # full batch
        step(x_train)
    nll = float(-np.mean(model.log_prob(x_test)))
    print(f"\nGMM-8: held-out NLL {nll:.4f} nats, true entropy {entropy:.4f} nats, "
          f"gap {nll - entropy:+.4f} ({steps} steps, {time.time() - start:.1f} s)")
    assert nll - entropy < 0.1
    # Cross-entropy >= entropy: a much lower NLL means an unnormalized density.
    assert nll - entropy > -0.02
