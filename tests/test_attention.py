"""Gated self-attention in the conditioners (Flow++ section 3.3): the layer's math against
NumPy, its symmetries, precision and serialization; ResNet(attention=True); RealNVP with
attention at the coarse scales (exactness, round trips, checkpoints, class-conditional);
the trainer's --attention."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf

import tfnvp
from tfnvp.nets import GatedAttention, ResNet
from tfnvp.nets import resnet as resnet_lib
from tfnvp.nets.attention import sinusoidal_position_encoding
from trainers import training

from bijector_checks import assert_exact_bijector, perturb_weights
from trainer_flags import trainer_spec


def _x(shape=(2, 3, 4, 8), seed=0, dtype=tf.float64, scale=1.0) -> tf.Tensor:
    return tf.constant(scale * np.random.default_rng(seed).standard_normal(shape), dtype)


def _layer(channels=8, heads=2, dtype="float64", **kwargs) -> GatedAttention:
    layer = GatedAttention(channels, heads, dtype=dtype, **kwargs)
    layer(_x((1, 2, 2, channels), dtype=layer.compute_dtype))
    perturb_weights([layer], scale=0.3)
    return layer


def _numpy_attention(layer: GatedAttention, x: np.ndarray) -> np.ndarray:
    """The module docstring's formula, independently, in float64 NumPy."""
    def conv1x1(conv, t):
        kernel = conv.normalized_kernel().numpy()[0, 0]
        return t @ kernel + conv.bias.numpy()

    batch, h, w, c = x.shape
    heads, d = layer.heads, c // layer.heads
    inputs = x + sinusoidal_position_encoding(h, w, c, tf.float64).numpy()
    q, k, v = np.split(conv1x1(layer.qkv, inputs).reshape(batch, h * w, 3 * c), 3, axis=-1)
    q, k, v = (t.reshape(batch, h * w, heads, d) for t in (q, k, v))
    weights = scipy.special.softmax(np.einsum("bnhd,bmhd->bhnm", q, k) / math.sqrt(d), axis=-1)
    attended = np.einsum("bhnm,bmhd->bnhd", weights, v).reshape(batch, h, w, c)
    linear, gate = np.split(conv1x1(layer.gate, attended), 2, axis=-1)
    out = x + linear * scipy.special.expit(gate)
    mean, var = out.mean(-1, keepdims=True), out.var(-1, keepdims=True)
    norm = layer.norm
    return (out - mean) / np.sqrt(var + norm.epsilon) * norm.gamma.numpy() + norm.beta.numpy()


# ------------------------------------------------------------------- the layer
def test_layer_is_the_gated_attention_formula():
    layer = _layer()
    x = _x()
    np.testing.assert_allclose(layer(x).numpy(), _numpy_attention(layer, x.numpy()), atol=1e-10)


def test_position_encoding_is_sinusoidal_in_rows_and_columns():
    p = sinusoidal_position_encoding(3, 5, 10, tf.float64).numpy()
    assert p.shape == (3, 5, 10) and np.all(p[..., 8:] == 0)  # 10 // 4 = 2 frequencies.
    r, c = np.meshgrid(np.arange(3), np.arange(5), indexing="ij")
    for i, f in enumerate((2 * np.pi / 4, 2 * np.pi / 8)):
        np.testing.assert_allclose(p[..., 4 * i:4 * i + 4], np.stack(
            [np.sin(f * r), np.cos(f * r), np.sin(f * c), np.cos(f * c)], -1), atol=1e-6)


def test_permutation_equivariant_over_positions_without_position_encoding():
    x = _x((2, 3, 4, 8))
    permutation = np.random.default_rng(1).permutation(12)

    def permuted(t):
        return tf.reshape(tf.gather(tf.reshape(t, [2, 12, 8]), permutation, axis=1), [2, 3, 4, 8])

    plain = _layer(position_encoding=False)
    np.testing.assert_allclose(plain(permuted(x)).numpy(), permuted(plain(x)).numpy(), atol=1e-12)
    encoded = _layer(position_encoding=True)
    assert np.abs(encoded(permuted(x)).numpy() - permuted(encoded(x)).numpy()).max() > 1e-3


@pytest.mark.parametrize("policy", ["float32", "float64", "mixed_float16", "mixed_bfloat16"])
def test_dynamic_shapes_and_dtypes(policy):
    layer = _layer(dtype=policy)
    compute = tf.as_dtype(layer.compute_dtype)
    run = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 8], compute)])
    for shape in [(3, 2, 2, 8), (1, 4, 6, 8)]:
        y = run(_x(shape, dtype=compute))
        assert y.shape == shape and y.dtype == compute
        assert np.all(np.isfinite(tf.cast(y, tf.float32).numpy()))
    assert all(w.dtype == ("float64" if policy == "float64" else "float32") for w in layer.weights)
    y = layer(_x((2, 3, 2, 2, 8), dtype=compute))  # Two leading batch axes.
    assert y.shape == (2, 3, 2, 2, 8)


def test_mixed_float16_logits_and_layer_norm_are_float32():
    """Large activations whose float16 logits would overflow (|q.k| > 65504)."""
    reference = _layer(dtype="float32")
    half = GatedAttention(8, 2, dtype="mixed_float16")
    half(tf.zeros((1, 2, 2, 8), tf.float16))
    half.set_weights(reference.get_weights())
    x = _x((2, 4, 4, 8), dtype=tf.float32, scale=200.0)
    q = reference.qkv(x)[..., :8].numpy()
    assert np.abs(q).max() ** 2 > 65504
    expected = reference(x).numpy()
    got = half(tf.cast(x, tf.float16))
    assert got.dtype == tf.float16
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), expected, atol=0.1)


def test_every_weight_gets_a_gradient():
    body = ResNet(8, 2, 4, attention=True, attention_heads=2, dtype="float64")
    body(_x((4, 4, 4, 3)))
    perturb_weights([body], scale=0.3)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(body(_x((4, 4, 4, 3)), training=True) ** 2)
    grads = tape.gradient(loss, body.trainable_weights)
    attention = [w for w in body.trainable_weights if "attention" in w.path]
    assert len(attention) == 2 * (3 * 2 + 2)  # Two layers: two convolutions (v, g, b), a norm.
    missing = [w.path for w, g in zip(body.trainable_weights, grads)
               if g is None or not np.any(g.numpy())]
    assert not missing, missing


def test_config_round_trips():
    layer = _layer(position_encoding=False)
    copy = GatedAttention.from_config(layer.get_config())
    assert copy.get_config() == layer.get_config()
    x = _x()
    copy(x)
    copy.set_weights(layer.get_weights())
    np.testing.assert_array_equal(copy(x).numpy(), layer(x).numpy())
    body = ResNet(8, 1, 4, attention=True, attention_heads=2)
    config = keras.saving.serialize_keras_object(body)
    rebuilt = keras.saving.deserialize_keras_object(config)
    assert rebuilt.attention and rebuilt.attention_heads == 2 and len(rebuilt.attentions) == 1


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="heads"):
        GatedAttention(6, 4)
    with pytest.raises(ValueError, match="num_blocks"):
        ResNet(8, 0, 4, attention=True)
    with pytest.raises(ValueError, match="attention_min_depth"):
        tfnvp.RealNVP((4, 4, 1), num_scales=2, num_res_blocks=1, hidden_channels=4,
                      attention=True, attention_min_depth=2)
    with pytest.raises(ValueError, match="heads"):
        tfnvp.RealNVP((4, 4, 1), num_scales=2, num_res_blocks=1, hidden_channels=4,
                      attention=True, attention_heads=3)


# ------------------------------------------------------------------- the model
def _model(**kwargs) -> tfnvp.RealNVP:
    return tfnvp.RealNVP((4, 4, 2), num_scales=2, num_res_blocks=1, hidden_channels=4,
                         attention=True, attention_heads=2, **kwargs)


@pytest.fixture(scope="module")
def model64() -> tfnvp.RealNVP:
    """Float64, perturbed weights (a new flow is the identity)."""
    model = _model(dtype="float64")
    perturb_weights(model.conditioners + model.statistics, scale=0.2)
    return model


def test_attention_at_the_coarse_scales_only_and_config(model64):
    steps = tfnvp.multiscale.walk(model64._untracked.scales, 2)
    has = [bool(c.body.attentions) for c in model64.conditioners]
    assert has == [position.depth >= 1 for _, position in steps]
    assert has.count(False) == 3 and has.count(True) == 7
    config = model64.get_config()
    assert config["attention"] and config["attention_heads"] == 2
    assert config["attention_min_depth"] == 1
    everywhere = tfnvp.RealNVP.from_config({**config, "attention_min_depth": 0})
    assert all(c.body.attentions for c in everywhere.conditioners)
    assert model64.count_params() < everywhere.count_params()
    plain = tfnvp.RealNVP((4, 4, 2), num_scales=2, num_res_blocks=1, hidden_channels=4)
    assert not any(key.startswith("attention") for key in plain.get_config())
    assert plain.count_params() < model64.count_params()


def test_whole_flow_exact_against_numerical_jacobian(model64):
    x = tf.random.uniform((2, 4, 4, 2), 8.0, 248.0, dtype=tf.float64)
    z = model64.bijector.inverse(x)
    logit_only = tfnvp.bijectors.LogitPreprocess().inverse(x)
    assert np.abs(z.numpy() - logit_only.numpy()).max() > 0.1
    errors = assert_exact_bijector(model64.bijector, tf.identity(z), event_ndims=3,
                                   graph_mode=False)
    assert errors["log_det_vs_numerical"] < 1e-6 and errors["round_trip"] < 1e-9


def test_log_prob_and_round_trip_from_fresh_tensors_and_other_sizes(model64):
    x = tf.random.uniform((3, 4, 4, 2), 1.0, 255.0, dtype=tf.float64)
    z = model64.encode(tf.identity(x))
    np.testing.assert_allclose(model64.decode(tf.identity(z)).numpy(), x.numpy(), atol=1e-8)
    ildj = model64.bijector.inverse_log_det_jacobian(tf.identity(x), event_ndims=3).numpy()
    base = scipy.stats.norm.logpdf(z.numpy()).reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(model64.log_prob(tf.identity(x)).numpy(), base + ildj,
                               rtol=1e-12)
    # The same weights on 8x8 images (attention over 16 positions instead of 4).
    big = tf.random.uniform((2, 8, 8, 2), 1.0, 255.0, dtype=tf.float64)
    z_big = model64.distribution_for((8, 8, 2)).bijector.inverse(big)
    assert z_big.shape == (2, 8, 8, 2)
    np.testing.assert_allclose(
        model64.distribution_for((8, 8, 2)).bijector.forward(tf.identity(z_big)).numpy(),
        big.numpy(), atol=1e-8)


def test_class_conditional_model_checkpoint_and_save(tmp_path, monkeypatch):
    images = np.random.default_rng(4).integers(0, 256, (16, 4, 4, 2), dtype=np.uint8)
    labels = np.arange(16) % 3
    model = _model(num_classes=3)
    # Weights away from the identity initialization (the prior's included).
    perturb_weights(model.conditioners + model.statistics + [model.prior], scale=0.2)
    x = tf.constant(images.astype(np.float32) + 0.5)
    log_prob = model.log_prob(tf.identity(x), labels=labels).numpy()
    # The labels matter: another class, another density.
    other = model.log_prob(tf.identity(x), labels=(labels + 1) % 3).numpy()
    assert np.abs(other - log_prob).max() > 1e-3
    # Evaluation mode folds the residual blocks' batch norms; unfolded, the same density.
    monkeypatch.setattr(resnet_lib, "FOLD_EVAL_BATCH_NORM", False)
    unfolded = tf.function(model.log_prob)(tf.identity(x), labels=labels).numpy()
    np.testing.assert_allclose(unfolded, log_prob, rtol=1e-5)
    monkeypatch.undo()

    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    model.save(tmp_path / "model.keras")
    restored = keras.models.load_model(tmp_path / "model.keras")  # from_config + weights.
    assert restored.get_config() == model.get_config()
    perturb_weights(restored.conditioners + restored.statistics, scale=0.1)
    assert np.abs(restored.log_prob(tf.identity(x), labels=labels).numpy() - log_prob).max() > 1e-3
    status = tf.train.Checkpoint(model=restored).restore(path)
    status.assert_existing_objects_matched()
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    attention = [w for w in restored.weights if "attention" in w.path]
    assert len(attention) == 7 * 8
    np.testing.assert_array_equal(restored.log_prob(tf.identity(x), labels=labels).numpy(),
                                  log_prob)


def test_mixed_precision_model_is_finite():
    model = _model(conditioner_dtype="mixed_float16")
    x = tf.random.uniform((4, 4, 4, 2), 0.0, 256.0)
    with tf.GradientTape() as tape:
        nll = model.nll(x, training=True)
        loss = tf.reduce_mean(nll)
    assert nll.dtype == tf.float32 and np.all(np.isfinite(nll.numpy()))
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
    attention = [c.body.attentions[0] for c in model.conditioners if c.body.attentions]
    assert attention[0].compute_dtype == "float16"
    assert attention[0].norm.compute_dtype == "float32"


# ----------------------------------------------------------------- the trainer
def test_trainer_builds_the_attention_model():
    flags = ("--num_scales=2", "--hidden_channels=4", "--attention", "--attention_heads=2")
    model = training.build_model(trainer_spec(*flags, "--num_res_blocks=1", shape=(4, 4, 1)))
    assert model.get_config()["attention_heads"] == 2
    assert sum(bool(c.body.attentions) for c in model.conditioners) == 7
    # Glow takes it too (tests/test_glow_flowpp.py): every level is at squeeze depth >= 1.
    glow = training.build_model(trainer_spec(*flags, "--model=glow", "--steps_per_scale=1",
                                              shape=(4, 4, 1)))
    assert all(c.body.gated_attention is not None for c in glow.conditioners)
