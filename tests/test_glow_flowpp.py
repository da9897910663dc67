"""Flow++'s conditioner options in Glow (attention, gated convolutions, dropout; Ho et al.
2019, section 3.3): GlowNet's hidden layer against its formula, dropout in training mode
only, a float64 Glow's log-det exact against the numerical Jacobian in training mode for the
sampled dropout mask (evaluation mode: tests/test_glow.py's whole-flow check), gradients,
checkpoint and config round trips, bad arguments, the trainer's options."""

import json

import keras
import numpy as np
import pytest
import scipy.special
import tensorflow as tf

import tfnvp
from tfnvp import running_average
from tfnvp.nets.glow_net import GlowNet
from trainers import run_dir, training

from bijector_checks import numerical_log_det, perturb_weights
from trainer_flags import trainer_spec

SHAPE = (8, 8, 1)
OPTIONS = dict(attention=True, attention_heads=2, gated_convolutions=True, dropout=0.3)


def _x(shape=(2, 4, 4, 3), seed=0) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).standard_normal(shape), tf.float64)


def _pixels(n: int, seed: int = 0, dtype=tf.float64) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).uniform(8.0, 248.0, (n, *SHAPE)), dtype)


# ------------------------------------------------------------------ the network
def _net() -> tuple[GlowNet, tf.Tensor]:
    """Actnorms initialized by a training call, then every weight perturbed."""
    net = GlowNet(4, hidden_channels=4, attention=True, attention_heads=2, gated=True,
                  dropout=0.5, dtype="float64")
    x = _x()
    net(x, training=True)
    perturb_weights([net], scale=0.3)
    return net, x


def test_hidden_layer_is_h_plus_glu_then_attention():
    net, x = _net()
    h = tf.nn.relu(net.norm_in(net.conv_in(x))).numpy()
    kernel = net.conv_hidden.kernel.numpy()
    assert kernel.shape == (1, 1, 4, 8)  # 2 * hidden features: a and g.
    u = (h @ kernel[0, 0] + net.norm_hidden.bias.numpy()) * np.exp(
        net.norm_hidden.log_scale.numpy())
    gated = h + u[..., :4] * scipy.special.expit(u[..., 4:])
    assert np.abs(gated - h).max() > 0.1
    attended = net.gated_attention(tf.constant(gated))
    expected = net.conv_out(attended).numpy() * np.exp(3.0 * net.out_logs.numpy())
    np.testing.assert_allclose(net(x).numpy(), expected, rtol=1e-10, atol=1e-12)
    assert np.abs(expected).max() > 1e-2  # Not vacuous.


def test_dropout_in_training_mode_only():
    net, x = _net()
    evaluation = net(x).numpy()
    np.testing.assert_array_equal(net(x).numpy(), evaluation)
    np.testing.assert_array_equal(net(x, training=running_average.RECALIBRATE).numpy(),
                                  evaluation)
    first, second = (net(x, training=True).numpy() for _ in range(2))
    assert np.abs(first - second).max() > 1e-3  # Two masks.
    assert np.abs(first - evaluation).max() > 1e-3
    ones = net.drop(tf.ones((2, 4, 4, 4), tf.float64), training=True).numpy()
    assert set(np.unique(ones)) == {0.0, 2.0}


def test_network_config_round_trip_and_defaults_unchanged():
    net = GlowNet(8, hidden_channels=4, attention=True, attention_heads=2, gated=True,
                  dropout=0.25)
    rebuilt = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(net))
    assert rebuilt.get_config() == net.get_config()
    assert (rebuilt.attention, rebuilt.attention_heads, rebuilt.gated) == (True, 2, True)
    assert rebuilt.drop.rate == 0.25 and rebuilt.gated_attention.heads == 2
    plain = GlowNet(8, hidden_channels=4).get_config()
    assert not {"attention", "attention_heads", "gated", "dropout"} & set(plain)
    assert GlowNet.from_config(plain).drop is None


# ------------------------------------------------------------------- the model
def _model(**kwargs) -> tfnvp.Glow:
    return tfnvp.Glow(SHAPE, **{**dict(num_scales=2, steps_per_scale=1, hidden_channels=4,
                                       dtype="float64", **OPTIONS), **kwargs})


@pytest.fixture(scope="module")
def model64() -> tfnvp.Glow:
    """Actnorms initialized from data, then the weights perturbed (a new Glow's coupling
    networks output zero)."""
    model = _model()
    model.log_prob(_pixels(8, seed=9), training=True)
    perturb_weights(model.actnorms + model.convolutions, scale=0.2)
    perturb_weights(model.conditioners, scale=0.05)
    return model


def test_every_coupling_network_has_the_options(model64):
    nets = [c.body for c in model64.conditioners]
    assert len(nets) == 2
    assert all(n.gated_attention is not None and n.gated and n.drop.rate == 0.3 for n in nets)
    # attention_min_depth: level i is at squeeze depth i + 1.
    last_only = _model(attention_min_depth=2, dtype="float32")
    assert [c.body.gated_attention is not None for c in last_only.conditioners] == [False, True]


def test_training_mode_log_det_is_exact_for_the_sampled_mask(model64):
    """Each training call draws its own masks; the log-det computed with a call's result
    (the fused pass, through TFP's cache) is that call's numerical log|det J|."""
    bijector = model64.bijector
    x = _pixels(2, seed=1)
    z = bijector.inverse(tf.identity(x))
    for name, fn, points in (("inverse", bijector.inverse, x), ("forward", bijector.forward, z)):
        log_det = {"inverse": bijector.inverse_log_det_jacobian,
                   "forward": bijector.forward_log_det_jacobian}[name]
        results, analytic = [], []

        def transform(t):
            out = fn(t, training=True)
            results.append(out.numpy())
            analytic.append(log_det(t, event_ndims=3, training=True).numpy())
            return out

        numeric = numerical_log_det(transform, tf.identity(points))
        np.testing.assert_allclose(analytic[0], numeric, rtol=0, atol=1e-6, err_msg=name)
        transform(tf.identity(points))
        # Two calls, two masks: other results and other log-dets.
        assert np.abs(results[0] - results[1]).max() > 1e-4, name
        assert np.abs(analytic[0] - analytic[1]).max() > 1e-6, name
        evaluation = log_det(tf.identity(points), event_ndims=3).numpy()
        assert np.abs(analytic[0] - evaluation).max() > 1e-6, name


def test_gradients_checkpoint_and_config_round_trip(tmp_path):
    model = _model(dtype="float32")
    x = _pixels(8, dtype=tf.float32)
    model.log_prob(x, training=True)  # Initializes the actnorms.
    # Away from the zero-initialized output layers (and priors), which block the others'
    # gradients.
    perturb_weights(model.conditioners + model.priors, scale=0.05)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.nll(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    missing = [v.path for v, g in zip(model.trainable_variables, grads)
               if g is None or not np.any(g.numpy())]
    assert not missing, f"weights without gradient: {missing}"
    assert any("attention" in v.path for v in model.trainable_variables)

    config = model.get_config()
    assert {k: config[k] for k in OPTIONS} == OPTIONS and config["attention_min_depth"] == 1
    plain = tfnvp.Glow(SHAPE, num_scales=2, steps_per_scale=1, hidden_channels=4).get_config()
    assert not {*OPTIONS, "attention_min_depth"} & set(plain)
    # A run's stored config (config.json, export metadata: JSON) builds the same model,
    # and the checkpoint restores every weight into it.
    restored = tfnvp.io.runs.build_model(
        {"model": json.loads(json.dumps(run_dir.model_config(model)))})
    assert type(restored) is tfnvp.Glow and restored.get_config() == config
    assert training.weights_fingerprint(restored) != training.weights_fingerprint(model)
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=restored).read(path).assert_existing_objects_matched()
    assert training.weights_fingerprint(restored) == training.weights_fingerprint(model)
    np.testing.assert_array_equal(restored.log_prob(x).numpy(), model.log_prob(x).numpy())


# -------------------------------------------------------------- bad arguments
def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"attention_min_depth must be in \[1, 2\]"):
        _model(attention_min_depth=0)
    with pytest.raises(ValueError, match=r"attention_min_depth must be in \[1, 2\]"):
        _model(attention_min_depth=3)
    with pytest.raises(ValueError, match="heads"):
        _model(attention_heads=3)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        _model(dropout=1.0)


# ----------------------------------------------------------------- the trainer
def test_trainer_builds_glow_with_the_options():
    spec = trainer_spec("--model=glow", "--num_scales=2", "--steps_per_scale=1",
                         "--hidden_channels=4", "--attention", "--attention_heads=2",
                         "--gated_convolutions", "--dropout=0.2")
    model = training.build_model(spec)
    assert isinstance(model, tfnvp.Glow)
    assert {k: model.get_config()[k] for k in OPTIONS} == {**OPTIONS, "dropout": 0.2}
