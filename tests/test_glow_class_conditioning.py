"""Glow's release class conditioning (openai/glow ``--ycond``, ``--weight_y``; issue 29,
item 2): labels reach the top prior only, a per-class mean and log-scale of the top latent,
and an optional classification loss from the top latent's mean over positions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
import tensorflow as tf

import tfnvp
from tfnvp.models.glow import glow_top_latent_positions
from tfnvp.nets.glow_prior import GaussianPriorHead, LinearZeros

from bijector_checks import assert_exact_bijector, perturb_weights

SHAPE = (8, 8, 2)
K = 3
LABELS = np.array([0, 2, 1])


def _model(**options) -> tfnvp.Glow:
    options = {"num_classes": K, "class_conditioning": "release", **options}
    return tfnvp.Glow(SHAPE, num_scales=2, steps_per_scale=1, hidden_channels=4,
                      dtype="float64", **options)


def _pixels(n: int = 3, seed: int = 0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).uniform(8.0, 248.0, (n, *SHAPE)), tf.float64)


def _top_head(model: tfnvp.Glow):
    return model._role("top_prior")[0]


def _trained_like(model: tfnvp.Glow) -> tfnvp.Glow:
    """Actnorms initialized, every weight perturbed (the label embedding included)."""
    model.log_prob(_pixels(8, seed=9), training=True, labels=np.arange(8) % K)
    perturb_weights(model.actnorms + model.convolutions, scale=0.2)
    perturb_weights(model.conditioners + model.priors, scale=0.1)
    if model.spec.weight_y:
        perturb_weights([model.classifier], scale=0.3)
    return model


def test_the_flow_given_labels_is_an_exact_bijector_from_fresh_tensors():
    """Float64 numerical Jacobian, round trips and log-dets of the whole flow, the labels
    as its context (the top prior a label-conditioned affine step)."""
    model = _trained_like(_model())
    context = tf.one_hot(LABELS, K, dtype=tf.float64)
    z = model.encode(_pixels(), labels=LABELS)
    assert_exact_bijector(model.bijector, z, 3, graph_mode=False, training=False,
                          context=context)
    x = _pixels()
    np.testing.assert_allclose(model.decode(model.encode(x, labels=LABELS), labels=LABELS)
                               .numpy(), x.numpy(), atol=1e-9)


def test_other_labels_change_exactly_the_top_latents_and_their_prior():
    model = _trained_like(_model())
    x = _pixels()
    z = model.encode(x, labels=LABELS).numpy()
    other = (LABELS + 1) % K
    changed = np.abs(model.encode(tf.identity(x), labels=other).numpy() - z) > 1e-9
    # Every top entry of every example, nothing else: the couplings do not see the label.
    top = model.latent_scale_index() == 1
    np.testing.assert_array_equal(changed, np.broadcast_to(top, changed.shape))
    assert np.abs(model.log_prob(tf.identity(x), labels=other).numpy()
                  - model.log_prob(tf.identity(x), labels=LABELS).numpy()).min() > 1e-3
    # The base is N(0, I) (no ClassConditionalPrior), and the label's mean and log-scale are
    # one value per class and channel at every position, added to the learned top prior's.
    assert not hasattr(model, "prior")
    head = _top_head(model)
    zeros = tf.zeros((K, 2, 2, 32), tf.float64)
    mean, log_sigma = (t.numpy() for t in head.mean_and_log_scale(
        zeros, tf.one_hot(np.arange(K), K, dtype=tf.float64)))
    unlabelled = head.net(zeros[..., :0]).numpy()
    embedding = head.label_embedding(tf.eye(K, dtype=tf.float64)).numpy()
    np.testing.assert_allclose(mean, unlabelled[..., 0::2] + embedding[:, None, None, 0::2],
                               rtol=1e-12)
    np.testing.assert_allclose(log_sigma, unlabelled[..., 1::2]
                               + embedding[:, None, None, 1::2], rtol=1e-12)
    assert np.abs(mean[0] - mean[1]).min() > 1e-4


def test_a_new_release_model_is_the_unconditional_model():
    """Zero-initialized label embedding: with the same other weights, log_prob given any
    labels is the unconditional model's to 1e-10 (float64)."""
    conditional = _model()
    conditional.log_prob(_pixels(8, seed=9), training=True, labels=np.arange(8) % K)
    perturb_weights(conditional.actnorms + conditional.convolutions, scale=0.2)
    perturb_weights(conditional.conditioners, scale=0.1)
    unconditional = tfnvp.Glow(SHAPE, num_scales=2, steps_per_scale=1, hidden_channels=4,
                               dtype="float64")
    for role in ("actnorm", "conv1x1", "conditioner", "split_prior"):
        for source, target in zip(conditional._role(role), unconditional._role(role),
                                  strict=True):
            target.set_weights(source.get_weights())
    x = _pixels()
    expected = unconditional.log_prob(x).numpy()
    for labels in (LABELS, (LABELS + 1) % K):
        np.testing.assert_allclose(conditional.log_prob(tf.identity(x), labels=labels).numpy(),
                                   expected, rtol=1e-10, atol=0)
    perturb_weights([_top_head(conditional).label_embedding], scale=0.1)
    assert np.abs(conditional.log_prob(tf.identity(x), labels=LABELS).numpy()
                  - expected).min() > 1e-3


def test_top_latent_positions_follow_the_layout():
    """The top tensor's channel j, pushed through the flow, lands where encode puts it: a
    per-channel top-prior mean of -j moves the top latents by exactly +j in channel j."""
    model = tfnvp.Glow(SHAPE, num_scales=2, steps_per_scale=1, hidden_channels=4,
                       dtype="float64")
    x = _pixels()
    before = model.encode(x)
    head = model.priors[-1]
    channels = head.channels
    bias = np.zeros(2 * channels)
    bias[0::2] = -np.arange(channels)  # mu_j = -j, log_sigma = 0 (the kernel stays zero).
    head.net.bias.assign(bias)
    moved = model.top_latent(model.encode(tf.identity(x)) - before).numpy()
    np.testing.assert_allclose(moved, np.broadcast_to(np.arange(channels), moved.shape),
                               atol=1e-9)
    positions = glow_top_latent_positions(SHAPE, 2)
    np.testing.assert_array_equal(np.sort(positions),
                                  np.flatnonzero(model.latent_scale_index().ravel() == 1))


def test_the_classification_loss_against_a_direct_computation():
    model = _trained_like(_model(weight_y=0.25))
    images = np.random.default_rng(3).integers(0, 256, (3, *SHAPE)).astype(np.uint8)
    objective = model.objective(images, seed=(1, 2), labels=LABELS)
    # Directly: the top prior's input z = mu_y + sigma_y * eps, its mean over positions,
    # the zero-initialized-then-perturbed linear classifier, softmax cross entropy.
    x = tfnvp.dequantize(images, seed=(1, 2), dtype=tf.float64)
    eps = model.top_latent(model.encode(x, labels=LABELS)).numpy()
    head = _top_head(model)
    conv = head.net(tf.zeros((3, 2, 2, 0), tf.float64)).numpy()
    label = (head.label_embedding.kernel.numpy()[LABELS] + head.label_embedding.bias.numpy()) \
        * np.exp(3 * head.label_embedding.logs.numpy())
    h = conv + label[:, None, None, :]
    z_top = h[..., 0::2] + np.exp(h[..., 1::2]) * eps
    classifier = model.classifier
    logits = (z_top.mean(axis=(1, 2)) @ classifier.kernel.numpy() + classifier.bias.numpy()) \
        * np.exp(3 * classifier.logs.numpy())
    expected = -scipy.special.log_softmax(logits, axis=-1)[np.arange(3), LABELS]
    np.testing.assert_allclose(objective.classification_nll.numpy(), expected, rtol=1e-10)
    num_dims = math.prod(SHAPE)
    np.testing.assert_allclose(objective.loss.numpy(),
                               objective.nll.numpy() + 0.25 * num_dims * expected, rtol=1e-12)
    # bits/dim stay the likelihood's.
    np.testing.assert_allclose(objective.bits_per_dim.numpy(),
                               objective.nll.numpy() / (num_dims * math.log(2)), rtol=1e-12)
    # The classifier trains from the loss (the gradient reaches it) and not from nll.
    with tf.GradientTape(persistent=True) as tape:
        objective = model.objective(images, seed=(1, 2), labels=LABELS, training=True)
        loss, nll = tf.reduce_mean(objective.loss), tf.reduce_mean(objective.nll)
    assert all(np.abs(g.numpy()).max() > 1e-6
               for g in tape.gradient(loss, classifier.trainable_variables))
    assert all(g is None or not np.any(g.numpy())  # A compiled call's gradient may be zeros.
               for g in tape.gradient(nll, classifier.trainable_variables))


def test_weight_y_zero_removes_the_classification_loss():
    model = _trained_like(_model())
    images = np.random.default_rng(3).integers(0, 256, (3, *SHAPE)).astype(np.uint8)
    objective = model.objective(images, seed=(1, 2), labels=LABELS)
    np.testing.assert_array_equal(objective.classification_nll.numpy(), 0.0)
    np.testing.assert_array_equal(objective.loss.numpy(), objective.nll.numpy())
    assert not hasattr(model, "classifier")
    assert not any("classifier" in w.path for w in model.weights)


def test_release_without_learn_top_has_the_label_term_alone():
    model = _trained_like(_model(learn_top=False))
    head = _top_head(model)
    assert head.net is None and head.label_embedding is not None
    x = _pixels()
    z = model.encode(x, labels=LABELS)
    np.testing.assert_allclose(model.decode(z, labels=LABELS).numpy(), x.numpy(), atol=1e-9)


def test_samples_and_checkpoint_restore(tmp_path):
    model = _trained_like(_model(weight_y=0.5))
    samples = model.sample(3, seed=[1, 2], labels=LABELS)
    assert np.all(np.isfinite(model.log_prob(samples, labels=LABELS).numpy()))
    # Decoded from z ~ N(0, I) at temperature 1: the label acts inside the flow.
    eps = tf.random.stateless_normal((3, *SHAPE), seed=[1, 2], dtype=tf.float64)
    np.testing.assert_allclose(samples.numpy(), model.decode(eps, labels=LABELS).numpy(),
                               atol=1e-9)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    restored = _model(weight_y=0.5)
    tf.train.Checkpoint(model=restored).read(path).assert_existing_objects_matched()
    for a, b in zip(model.weights, restored.weights, strict=True):
        if "prior" in a.path or "classifier" in a.path:  # Keras numbers the other names.
            assert a.path == b.path
        np.testing.assert_array_equal(b.numpy(), a.numpy())
    images = np.random.default_rng(3).integers(0, 256, (3, *SHAPE)).astype(np.uint8)
    for field in ("loss", "classification_nll", "nll"):
        np.testing.assert_array_equal(
            getattr(restored.objective(images, seed=(1, 2), labels=LABELS), field).numpy(),
            getattr(model.objective(images, seed=(1, 2), labels=LABELS), field).numpy())


def test_stored_config_and_legacy_form():
    spec = _model(weight_y=0.5).spec
    assert spec.to_config()["class_conditioning"] == "release"
    assert tfnvp.GlowSpec.from_config(spec.to_config()) == spec
    # Today's form is the default and not recorded: stored configs load unchanged.
    legacy = tfnvp.GlowSpec(SHAPE, num_classes=K)
    assert "class_conditioning" not in legacy.to_config()
    assert "weight_y" not in legacy.to_config()
    assert tfnvp.GlowSpec.from_config(legacy.to_config(), legacy=True).class_conditioning == (
        "couplings")


@pytest.mark.parametrize("options,match", [
    (dict(class_conditioning="release"), "class_conditioning needs a class-conditional"),
    (dict(num_classes=K, weight_y=0.1), "weight_y is the release's classification loss"),
    (dict(num_classes=K, class_conditioning="release", weight_y=-1.0), "weight_y must be"),
    (dict(num_classes=K, class_conditioning="every"), "class_conditioning must be one of"),
])
def test_bad_options_are_refused_by_name(options, match):
    with pytest.raises(tfnvp.UsageError, match=match):
        tfnvp.GlowSpec(SHAPE, **options)


def test_linear_zeros_is_the_release_linear_zeros():
    layer = LinearZeros(4, dtype="float64")
    layer.build((None, 3))
    x = np.random.default_rng(2).standard_normal((5, 3))
    np.testing.assert_array_equal(layer(tf.constant(x)).numpy(), 0.0)  # Zero-initialized.
    perturb_weights([layer], scale=0.5)
    kernel, bias, logs = (w.numpy() for w in (layer.kernel, layer.bias, layer.logs))
    np.testing.assert_allclose(layer(tf.constant(x)).numpy(),
                               (x @ kernel + bias) * np.exp(3.0 * logs), rtol=1e-12)


def test_prior_head_errors_name_the_argument():
    with pytest.raises(tfnvp.UsageError, match="split prior is always learned"):
        GaussianPriorHead(4, "split", num_classes=K)
    with pytest.raises(tfnvp.UsageError, match="neither learned nor conditioned"):
        GaussianPriorHead(4, "top", learned=False)
    head = GaussianPriorHead(4, "top", num_classes=K, dtype="float64")
    head.build((None, 2, 2, 4))
    with pytest.raises(ValueError, match="pass context="):
        head.mean_and_log_scale(tf.zeros((1, 2, 2, 4), tf.float64))
