"""Glow's learned split and top priors (the authors' release: split2d_prior, learntop; issue 29).

Their exactness as bijectors is in tests/test_conformance.py (glow_split_prior,
glow_top_prior) and, in the whole flow, tests/test_glow.py (the priors on by default and
perturbed); here: a new prior is N(0, I), each prior does what it claims, checkpoints.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfnvp
from tfnvp.nets.glow_prior import GaussianPriorHead, ZeroConv2D

from bijector_checks import perturb_weights

SHAPE = (8, 8, 2)


def _model(**options) -> tfnvp.Glow:
    return tfnvp.Glow(SHAPE, num_scales=2, steps_per_scale=1, hidden_channels=4,
                      dtype="float64", **options)


def _pixels(n: int = 3, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).uniform(8.0, 248.0, (n, *SHAPE)), tf.float64)


def _trained_like(model: tfnvp.Glow) -> tfnvp.Glow:
    """Actnorms initialized, every flow weight but the priors' perturbed."""
    model.log_prob(_pixels(8, seed=9), training=True)
    perturb_weights(model.actnorms + model.convolutions, scale=0.2)
    perturb_weights(model.conditioners, scale=0.05)
    return model


def test_the_options_add_one_prior_per_split_and_one_top_prior_at_stable_paths():
    model = _model()
    assert [(head.kind, head.channels) for head in model.priors] == [("split", 8), ("top", 16)]
    paths = [w.path for head in model.priors for w in head.weights]
    assert paths == [f"{role}/zero_conv/{name}" for role in ("split_prior_1", "top_prior_3")
                     for name in ("kernel", "bias", "logs")]
    assert paths == [w.path for head in _model().priors for w in head.weights]
    assert _model(split_prior=False, learn_top=False).priors == []
    assert [h.kind for h in _model(split_prior=False).priors] == ["top"]
    assert [h.kind for h in _model(learn_top=False).priors] == ["split"]
    # The top prior's convolution sees only the edge channel (its input is zeros).
    assert model.priors[1].net.kernel.shape == (3, 3, 1, 32)


def test_a_new_model_with_the_priors_is_the_model_without_them():
    """Zero-initialized: the same weights give the same log_prob to 1e-10 (float64)."""
    with_priors = _trained_like(_model())
    without = _model(split_prior=False, learn_top=False)
    for role in ("actnorm", "conv1x1", "conditioner"):
        for source, target in zip(with_priors._role(role), without._role(role), strict=True):
            target.set_weights(source.get_weights())
    x = _pixels()
    expected = without.log_prob(x).numpy()
    np.testing.assert_allclose(with_priors.log_prob(tf.identity(x)).numpy(), expected,
                               rtol=1e-10, atol=0)
    # Perturbing the priors changes it (the comparison can fail).
    perturb_weights(with_priors.priors, scale=0.1)
    assert np.abs(with_priors.log_prob(tf.identity(x)).numpy() - expected).min() > 1e-3


def test_the_split_prior_mean_depends_on_the_half_that_stays():
    """The same leaving half z under two kept halves h: different mean, log-scale and
    density; the density is N(z; mu(h), sigma(h)^2)."""
    head = _model().priors[0]
    perturb_weights([head], scale=0.1)
    prior = tfnvp.bijectors.glow_prior.learned_prior(head)
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 4, 4, 4))
    h1, h2 = rng.standard_normal((2, 2, 4, 4, 4))
    densities, means = [], []
    for h in (h1, h2):
        x = tf.constant(np.concatenate([z, h], -1))
        eps = prior.inverse(x).numpy()
        np.testing.assert_array_equal(eps[..., 4:], h)  # The kept half passes unchanged.
        log_density = (-0.5 * (eps[..., :4] ** 2 + np.log(2 * np.pi))).sum((1, 2, 3)) + \
            prior.inverse_log_det_jacobian(tf.identity(x), event_ndims=3).numpy()
        mean, log_sigma = (t.numpy() for t in head.mean_and_log_scale(x))
        expected = (-0.5 * ((z - mean) / np.exp(log_sigma)) ** 2 - log_sigma
                    - 0.5 * np.log(2 * np.pi)).sum((1, 2, 3))
        np.testing.assert_allclose(log_density, expected, rtol=1e-12)
        densities.append(log_density)
        means.append(mean)
    assert np.abs(means[0] - means[1]).min() > 1e-4
    assert np.abs(densities[0] - densities[1]).min() > 1e-3


def test_the_top_prior_changes_the_top_latents_density_only():
    """Perturbed, the top prior moves the top latent's mean and scale (per channel, other
    values at the border): encode changes exactly the latents of the top level."""
    model = _trained_like(_model(split_prior=False))
    x = _pixels()
    z, log_prob = model.encode(x).numpy(), model.log_prob(tf.identity(x)).numpy()
    perturb_weights(model.priors, scale=0.1)
    changed = np.abs(model.encode(tf.identity(x)).numpy() - z) > 1e-9
    np.testing.assert_array_equal(changed.any(axis=0), model.latent_scale_index() == 1)
    assert np.abs(model.log_prob(tf.identity(x)).numpy() - log_prob).min() > 1e-3
    # Its mean and log-scale: equal at the interior positions, another value at the border.
    mean, _ = model.priors[0].mean_and_log_scale(tf.zeros((1, 6, 6, 16), tf.float64))
    mean = mean.numpy()[0]
    np.testing.assert_allclose(mean[1:-1, 1:-1], np.broadcast_to(mean[2, 2], (4, 4, 16)))
    assert np.abs(mean[0, 0] - mean[2, 2]).max() > 1e-3


def test_sampling_round_trip_and_checkpoint_restore(tmp_path):
    model = _trained_like(_model())
    perturb_weights(model.priors, scale=0.1)
    x = _pixels()
    np.testing.assert_allclose(model.decode(model.encode(x)).numpy(), x.numpy(), atol=1e-9)
    samples = model.sample(4, seed=[1, 2])
    assert np.all(np.isfinite(model.log_prob(samples).numpy()))
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    restored = _model()
    tf.train.Checkpoint(model=restored).read(path).assert_existing_objects_matched()
    for saved, loaded in zip(model.priors, restored.priors, strict=True):
        for a, b in zip(saved.weights, loaded.weights, strict=True):
            assert a.path == b.path
            np.testing.assert_array_equal(b.numpy(), a.numpy())
    np.testing.assert_array_equal(restored.log_prob(tf.identity(x)).numpy(),
                                  model.log_prob(tf.identity(x)).numpy())


def test_bad_prior_kind_and_channels():
    with pytest.raises(tfnvp.UsageError, match="kind must be one of"):
        GaussianPriorHead(4, "bottom")
    with pytest.raises(tfnvp.UsageError, match="split prior needs an even number"):
        GaussianPriorHead(3, "split")


def test_zero_conv_is_the_release_conv2d_zeros_with_its_edge_channel():
    """Against a direct sum: zero padding, a last input channel 1 in the padding and 0
    inside, a 3x3 convolution plus bias, times exp(3 logs)."""
    layer = ZeroConv2D(3, dtype="float64")
    layer.build((None, 4, 5, 2))
    perturb_weights([layer], scale=0.5)
    x = np.random.default_rng(1).standard_normal((2, 4, 5, 2))
    padded = np.pad(x, [(0, 0), (1, 1), (1, 1), (0, 0)])
    edge = np.pad(np.zeros((2, 4, 5, 1)), [(0, 0), (1, 1), (1, 1), (0, 0)], constant_values=1.0)
    inputs = np.concatenate([padded, edge], -1)
    kernel, bias, logs = (w.numpy() for w in (layer.kernel, layer.bias, layer.logs))
    expected = np.zeros((2, 4, 5, 3))
    for i in range(4):
        for j in range(5):
            expected[:, i, j] = np.einsum("bhwc,hwco->bo", inputs[:, i:i + 3, j:j + 3], kernel)
    expected = (expected + bias) * np.exp(3.0 * logs)
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(), expected, rtol=1e-12)
    assert ZeroConv2D(3).compute_output_shape((None, 4, 5, 2)) == (None, 4, 5, 3)
