"""LogisticMixtureCoupling (Flow++ section 3.2): exactness, bisection accuracy, weights, model."""

import numpy as np
import pytest
import scipy.special
import scipy.stats
import keras
import tensorflow as tf

import tfnvp
from tfnvp.bijectors import LogisticMixtureCoupling
from tfnvp.bijectors.logistic_mixture_coupling import (mixture_log_cdfs, mixture_log_pdf,
                                                       mixture_logit_cdf_inverse)
from tfnvp.nets import LogisticMixtureParameters, ResNet, ShiftAndLogScale

from bijector_checks import assert_exact_bijector, perturb_weights

K = 3


def _coupling(mask: str = "checkerboard", parity: int = 0, channels: int = 2,
              dtype: str = "float64") -> LogisticMixtureCoupling:
    body = ResNet(8, num_blocks=1, dtype=dtype,
                  out_channels=LogisticMixtureParameters.output_channels(channels, K))
    conditioner = LogisticMixtureParameters(body, channels, K, dtype=dtype)
    coupling = LogisticMixtureCoupling(conditioner, mask=mask, parity=parity)
    coupling.inverse(tf.zeros((1, 4, 4, channels), dtype))  # Builds the layers.
    perturb_weights([conditioner], scale=0.3)
    return coupling


@pytest.mark.parametrize("mask,parity,channels", [
    ("checkerboard", 0, 1), ("checkerboard", 1, 2), ("channel", 1, 4)])
def test_exact_against_numerical_jacobian(mask, parity, channels):
    coupling = _coupling(mask, parity, channels)
    z = tf.constant(2.0 * np.random.default_rng(0).standard_normal((3, 4, 4, channels)))
    errors = assert_exact_bijector(coupling, z, event_ndims=3)
    print(f"{mask} {parity} {channels}: {errors}")
    x = coupling.forward(z).numpy()
    b = coupling.mask(z).numpy()
    np.testing.assert_array_equal(x * b, z.numpy() * b)  # The kept half passes,
    assert np.abs((x - z.numpy()) * (1 - b)).max() > 0.1  # the other one changes.


def test_log_det_and_cdf_match_an_independent_closed_form():
    """Per entry, against scipy: y = exp(a) logit(sum_k pi_k expit((x - mu_k) e^-s_k)) + b."""
    coupling = _coupling("checkerboard", 1, 2)
    x = tf.constant(np.random.default_rng(1).standard_normal((2, 4, 4, 2)))
    a, b, log_pi, mu, s = (t.numpy() for t in coupling.conditioner(x * coupling.mask(x)))
    pi, xv = np.exp(log_pi), x.numpy()[..., None]
    cdf = (pi * scipy.special.expit((xv - mu) * np.exp(-s))).sum(-1)
    pdf = (pi * scipy.stats.logistic.pdf((xv - mu) * np.exp(-s)) * np.exp(-s)).sum(-1)
    free = 1.0 - coupling.mask(x).numpy()
    y = xv[..., 0] * (1 - free) + free * (np.exp(a) * scipy.special.logit(cdf) + b)
    ildj = (free * (a + np.log(pdf) - np.log(cdf) - np.log1p(-cdf))).reshape(2, -1).sum(-1)
    np.testing.assert_allclose(coupling.inverse(x).numpy(), y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(coupling.inverse_log_det_jacobian(x, event_ndims=3).numpy(), ildj,
                               rtol=1e-12)


def _mixture(shape, dtype, seed=3):
    rng = np.random.default_rng(seed)
    log_pi = scipy.special.log_softmax(rng.standard_normal(shape + (K,)), axis=-1)
    mu = 3.0 * rng.standard_normal(shape + (K,))
    s = rng.uniform(-3.0, 2.0, shape + (K,))
    return [tf.constant(v, dtype) for v in (log_pi, mu, s)]


@pytest.mark.parametrize("dtype,rtol", [(tf.float64, 1e-12), (tf.float32, 1e-5)])
def test_bisection_reaches_the_root_in_far_tails(dtype, rtol):
    """Targets logit F(x) = t up to |t| = 1e5 (F within e^-1e5 of 0 or 1)."""
    magnitudes = np.array([0.0, 0.5, 8.0, 40.0, 700.0, 1e3, 1e5])
    target = np.concatenate([magnitudes, -magnitudes])[:, None] * np.ones((1, 5))
    mixture = _mixture(target.shape, dtype)
    x = mixture_logit_cdf_inverse(tf.constant(target, dtype), *mixture)
    log_c, log_1mc = mixture_log_cdfs(x, *mixture)
    assert np.all(np.isfinite(x.numpy()))
    # logit F(x) is back at the target (to the conditioning of the evaluation).
    np.testing.assert_allclose((log_c - log_1mc).numpy(), target,
                               rtol=rtol, atol=rtol * 10)
    # The root is inside the component-quantile bracket.
    quantiles = mixture[1].numpy() + np.exp(mixture[2].numpy()) * target[..., None]
    slack = 1e-6 * np.maximum(1.0, np.abs(quantiles).max(-1))
    assert np.all(x.numpy() >= quantiles.min(-1) - slack)
    assert np.all(x.numpy() <= quantiles.max(-1) + slack)
    assert np.all(np.isfinite(mixture_log_pdf(x, *mixture).numpy()))


def test_single_component_inverse_is_the_logistic_quantile():
    """K = 1: x = mu + e^s t exactly (known answer), also 1e4 deep in the tails."""
    target = tf.constant([-1e4, -30.0, -1.0, 0.0, 0.3, 30.0, 1e4], tf.float64)
    mu, s = tf.constant(0.7, tf.float64), tf.constant(-0.4, tf.float64)
    x = mixture_logit_cdf_inverse(target, tf.zeros([7, 1], tf.float64), mu + tf.zeros([7, 1], tf.float64),
                                  s + tf.zeros([7, 1], tf.float64))
    np.testing.assert_allclose(x.numpy(), 0.7 + np.exp(-0.4) * target.numpy(), rtol=1e-14)


@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_round_trip_in_far_tails(dtype, rtol):
    """Transformed entries at +-8 .. +-1e5, kept entries typical; fresh tensors both ways."""
    coupling = _coupling("checkerboard", 0, 2, dtype=dtype)
    rng = np.random.default_rng(4)
    b = coupling.mask(tf.zeros((4, 4, 2), dtype)).numpy()
    for magnitude in (8.0, 1e3, 1e5):
        z = b * rng.standard_normal((3, 4, 4, 2)) + (1 - b) * magnitude * rng.choice([-1, 1], (3, 4, 4, 2))
        z = tf.constant(z, dtype)
        x = coupling.forward(z)
        z_back = coupling.inverse(tf.identity(x))
        x_again = coupling.forward(tf.identity(z_back))
        for value in (x, z_back, coupling.forward_log_det_jacobian(z, event_ndims=3)):
            assert np.all(np.isfinite(value.numpy())), magnitude
        np.testing.assert_allclose(z_back.numpy(), z.numpy(), rtol=rtol, atol=rtol)
        np.testing.assert_allclose(x_again.numpy(), x.numpy(), rtol=rtol, atol=rtol)


def test_gradient_reaches_every_conditioner_weight_in_both_directions():
    coupling = _coupling("checkerboard", 1, 2, dtype="float32")
    weights = coupling.conditioner.trainable_weights
    assert len(weights) > 2  # body + a's scale + component offsets
    x = tf.random.normal((4, 4, 4, 2))
    for direction in (coupling.inverse, coupling.forward):
        with tf.GradientTape() as tape:
            out = direction(tf.identity(x), training=True)
            loss = tf.reduce_sum(out ** 2)
        grads = tape.gradient(loss, weights)
        missing = [w.path for w, g in zip(weights, grads) if g is None or not np.any(g.numpy())]
        assert not missing, (direction, missing)


def test_conditioner_checkpoint_round_trip(tmp_path):
    saved = _coupling().conditioner
    path = tf.train.Checkpoint(net=saved).save(str(tmp_path / "ckpt"))
    restored = _coupling().conditioner
    for w in restored.trainable_weights:
        w.assign(tf.zeros_like(w))
    tf.train.Checkpoint(net=restored).restore(path).assert_existing_objects_matched()
    assert len(saved.weights) == len(restored.weights) > 0
    for a, b in zip(saved.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_bad_arguments():
    body = ResNet(4, num_blocks=0, out_channels=5)
    with pytest.raises(ValueError, match="components must be at least 1"):
        LogisticMixtureParameters(body, 1, components=0)
    with pytest.raises(ValueError, match="coupling must be one of"):
        tfnvp.RealNVP((4, 4, 1), num_scales=1, num_res_blocks=1, hidden_channels=4,
                      coupling="spline")


@pytest.fixture(scope="module")
def model() -> tfnvp.RealNVP:
    model = tfnvp.RealNVP((4, 4, 2), num_scales=2, num_res_blocks=1, hidden_channels=4,
                          dtype="float64", coupling="logistic_mixture", mixture_components=K)
    perturb_weights(model.conditioners + model.statistics, scale=0.2)
    return model


def test_whole_model_exact_against_numerical_jacobian_and_sample_round_trip(model):
    x = tf.random.uniform((2, 4, 4, 2), 8.0, 248.0, dtype=tf.float64, seed=5)
    z = model.bijector.inverse(x)
    errors = assert_exact_bijector(model.bijector, tf.identity(z), event_ndims=3, graph_mode=False)
    print(f"whole logistic-mixture flow: worst errors {errors}")
    # Samples (bisection in every coupling) encode back to their latents, and
    # log_prob is the prior's plus the log-det.
    samples = model.sample(3, seed=(1, 2))
    assert np.all(np.isfinite(samples.numpy()))
    assert samples.numpy().min() >= 0.0 and samples.numpy().max() < 256.0
    z = model.encode(tf.identity(samples))
    np.testing.assert_allclose(model.decode(tf.identity(z)).numpy(), samples.numpy(), atol=1e-9)
    log_p = model.log_prob(tf.identity(samples)).numpy()
    prior = -0.5 * (z.numpy() ** 2).reshape(3, -1).sum(-1) - 16 * np.log(2 * np.pi)
    ildj = model.bijector.inverse_log_det_jacobian(tf.identity(samples), event_ndims=3).numpy()
    np.testing.assert_allclose(log_p, prior + ildj, rtol=1e-12)


def test_model_gradients_config_and_checkpoint_round_trip(model, tmp_path):
    x = tf.random.uniform((8, 4, 4, 2), 0.0, 256.0, dtype=tf.float64, seed=6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.nll(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(model.trainable_variables) == sum(len(c.trainable_weights) for c in model.conditioners)
    missing = [v.path for v, g in zip(model.trainable_variables, grads)
               if g is None or not np.any(g.numpy())]
    assert not missing, f"weights without gradient: {missing}"

    config = model.get_config()
    assert config["coupling"] == "logistic_mixture" and config["mixture_components"] == K
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    restored = tfnvp.RealNVP(**config)
    assert restored.get_config() == config
    assert isinstance(restored.conditioners[0], LogisticMixtureParameters)
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    assert len(restored.weights) == len(model.weights)
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_allclose(restored.log_prob(x).numpy(), model.log_prob(x).numpy(), rtol=1e-12)


@pytest.mark.parametrize("coupling", ["affine", "logistic_mixture"])
def test_samples_stay_finite_with_perturbed_weights(coupling):
    """Regression: without the cap on s_k every sample of this model was NaN.

    Latent -> data, a coupling's tails have slope ``exp(max_k s_k - a)``; an
    uncapped ``s_k`` fed large values to the next conditioner, which emitted a
    larger ``s_k`` (values reached 1e37, then NaN).  The cap makes the mixture
    coupling as robust as the affine one, checked here side by side.  The
    noise accumulates: the second round is the harder case (conditioner
    outputs near 1e15, where the Newton step's slope underflows and the
    bisection's midpoint is kept).
    """
    model = tfnvp.RealNVP((8, 8, 3), num_scales=2, num_res_blocks=1, hidden_channels=4,
                          coupling=coupling, mixture_components=2)
    for seed in range(2):
        perturb_weights(model.conditioners + model.statistics, scale=1.0, seed=10 + seed)
        samples = model.sample(128, seed=(1, seed)).numpy()
        assert np.isfinite(samples).all(), (
            f"{coupling}: {int((~np.isfinite(samples)).reshape(128, -1).any(1).sum())} of 128 "
            "samples are not finite")


def test_component_log_scales_are_capped_smoothly():
    """s_k = max(2 - softplus(2 - raw), -7): the floor, the soft middle, the cap."""
    conditioner = LogisticMixtureParameters(keras.layers.Identity(), channels=1, components=1)
    raw_s = np.array([-50.0, -3.0, 0.0, 3.0, 50.0])
    features = np.zeros((5, 5), np.float32)  # per entry: raw a, b, logit, mean, s
    features[:, 4] = raw_s
    log_scales = conditioner(tf.constant(features))[-1].numpy()[:, 0, 0]
    expected = np.maximum(2.0 - np.logaddexp(0.0, 2.0 - raw_s), -7.0)
    np.testing.assert_allclose(log_scales, expected, rtol=1e-6)
    assert log_scales[0] == -7.0 and 1.99 < log_scales[-1] <= 2.0


def test_affine_default_config_unchanged():
    affine = tfnvp.RealNVP((4, 4, 1), num_scales=1, num_res_blocks=1, hidden_channels=4)
    assert "coupling" not in affine.get_config() and "mixture_components" not in affine.get_config()
    assert all(isinstance(c, ShiftAndLogScale) for c in affine.conditioners)


def test_trainer_flags_build_and_record_the_coupling(tmp_path):
    from trainers import model_flags, train, training

    train.FLAGS.unparse_flags()
    train.FLAGS(train.resolve_flagfiles([
        "train.py", "--flagfile=digits.flags", "--num_scales=1", "--num_res_blocks=0",
        "--hidden_channels=4", "--coupling=logistic_mixture", "--mixture_components=2",
        f"--output_dir={tmp_path}"]))
    spec = model_flags.model_spec(train.FLAGS, "digits", (8, 8, 1), None, None)
    train.FLAGS.unparse_flags()
    assert (spec.coupling, spec.mixture_components) == ("logistic_mixture", 2)
    model = training.build_model(spec)
    assert model.get_config()["coupling"] == "logistic_mixture"
    assert model.get_config()["mixture_components"] == 2
    assert all(isinstance(c, LogisticMixtureParameters) and c.components == 2
               for c in model.conditioners)
