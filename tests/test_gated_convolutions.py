"""Flow++'s gated residual blocks and dropout in the ResNet conditioners (Ho et al. 2019,
section 3.3): the block against a NumPy computation of ``h + a * sigmoid(g)``; dropout in
training mode only; a whole float64 RealNVP exact against the numerical Jacobian; gradients,
configs and checkpoints; bad arguments (including dropout with recompute_gradients); the
trainer's options."""


import keras
import numpy as np
import pytest
import scipy.special
import tensorflow as tf

import tfnvp
from tfnvp import running_average
from tfnvp.nets import ResNet, ShiftAndLogScale
from tfnvp.nets import resnet as resnet_lib
from trainers import training

from bijector_checks import assert_exact_bijector, perturb_weights
from trainer_flags import trainer_spec


def _x(shape=(2, 4, 4, 3), seed=0, dtype=tf.float64) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).standard_normal(shape), dtype)


# ------------------------------------------------------------------ the block
def _numpy_conv(x: np.ndarray, conv) -> np.ndarray:
    """SAME 3x3 convolution with the weight-normalized kernel ``g * v / ||v||``."""
    v, g, bias = conv.direction.numpy(), conv.gain.numpy(), conv.bias.numpy()
    kernel = g * v / np.sqrt((v ** 2).sum(axis=(0, 1, 2)))
    k = kernel.shape[0] // 2
    padded = np.pad(x, ((0, 0), (k, k), (k, k), (0, 0)))
    height, width = x.shape[1:3]
    out = sum(np.einsum("bhwc,cf->bhwf", padded[:, i:i + height, j:j + width], kernel[i, j])
              for i in range(kernel.shape[0]) for j in range(kernel.shape[1]))
    return out + bias


def _numpy_batch_norm(x: np.ndarray, norm) -> np.ndarray:
    """Evaluation mode: the moving averages."""
    return (norm.gamma.numpy() * (x - norm.moving_mean.numpy())
            / np.sqrt(norm.moving_variance.numpy() + norm.epsilon) + norm.beta.numpy())


def _numpy_block(block, h: np.ndarray) -> np.ndarray:
    """``h + a * sigmoid(g)``, ``(a, g) = conv(relu(bn(conv(relu(bn(h))))))``."""
    x = np.maximum(_numpy_batch_norm(h, block.norm_in), 0.0)
    u = np.maximum(_numpy_batch_norm(_numpy_conv(x, block.conv_in), block.norm_out), 0.0)
    a, g = np.split(_numpy_conv(u, block.conv_out), 2, axis=-1)
    return h + a * scipy.special.expit(g)


@pytest.mark.parametrize("fold", [True, False])
def test_gated_block_is_h_plus_a_sigmoid_g(fold, monkeypatch):
    monkeypatch.setattr(resnet_lib, "FOLD_EVAL_BATCH_NORM", fold)
    block = resnet_lib._ResidualBlock(3, False, gated=True, dropout=0.5, dtype="float64")
    h = _x()
    block(h)
    assert block.conv_out.direction.shape == (3, 3, 3, 6)  # 2C features: a and g.
    perturb_weights([block], scale=0.5)
    got = block(h).numpy()  # Evaluation mode: no dropout.
    np.testing.assert_allclose(got, _numpy_block(block, h.numpy()), rtol=1e-10, atol=1e-10)
    assert np.abs(got - h.numpy()).max() > 0.1


def test_dropout_in_training_mode_only_and_not_when_recalibrating():
    h = _x((4, 4, 4, 3))
    bodies = {rate: ResNet(6, 2, 4, gated=True, dropout=rate, dtype="float64")
              for rate in (0.0, 0.5)}
    for body in bodies.values():
        body(h)
    plain, dropped = bodies[0.0], bodies[0.5]
    perturb_weights([plain], scale=0.3)
    # The same weights (the dropout layers have none of their own).
    assert len(plain.weights) == len(dropped.weights)
    for source, target in zip(plain.weights, dropped.weights):
        target.assign(source)
    snapshot = [w.numpy() for w in plain.weights]

    def restore():  # The batch norms' statistics, changed by every training call.
        for body in bodies.values():
            for w, value in zip(body.weights, snapshot):
                w.assign(value)

    first, second = (dropped(h, training=True).numpy() for _ in range(2))
    assert np.abs(first - second).max() > 1e-3  # Two masks.
    restore()
    np.testing.assert_array_equal(plain(h, training=True).numpy(),
                                  plain(h, training=True).numpy())  # Without dropout: equal.
    for mode in (False, running_average.RECALIBRATE):
        restore()
        np.testing.assert_allclose(dropped(h, training=mode).numpy(),
                                   plain(h, training=mode).numpy(), rtol=1e-12, atol=1e-12)
    # Dropout zeroes hidden activations: with rate 0.5, about half of them.
    block = dropped.blocks[0]
    u = tf.ones((2, 4, 4, 6), tf.float64)
    kept = block.drop(u, training=True).numpy()
    assert set(np.unique(kept)) == {0.0, 2.0} and 0.3 < (kept == 0).mean() < 0.7


def test_a_new_gated_coupling_is_the_identity():
    """The output head's zero gain: shift = log_scale = 0, whatever the blocks compute."""
    body = ResNet(6, 2, 4, gated=True, dropout=0.3, dtype="float64")
    head = ShiftAndLogScale(body, 2, dtype="float64")
    x = _x((2, 4, 4, 2))
    head(x)
    perturb_weights([block for block in body.blocks], scale=0.5)
    for training in (False, True):
        shift, log_scale = head(x, training=training)
        assert not np.any(shift.numpy()) and not np.any(log_scale.numpy())


def test_resnet_config_round_trip_and_defaults_unchanged():
    body = ResNet(8, 2, 4, gated=True, dropout=0.25)
    config = keras.saving.serialize_keras_object(body)
    rebuilt = keras.saving.deserialize_keras_object(config)
    assert rebuilt.get_config() == body.get_config()
    assert rebuilt.gated and rebuilt.dropout == 0.25
    assert all(b.gated and b.drop.rate == 0.25 for b in rebuilt.blocks)
    plain = ResNet(8, 2, 4).get_config()
    assert "gated" not in plain and "dropout" not in plain
    assert ResNet.from_config(plain).blocks[0].drop is None


# ------------------------------------------------------------------- the model
def _model(**kwargs) -> tfnvp.RealNVP:
    return tfnvp.RealNVP((4, 4, 2), **{**dict(num_scales=2, num_res_blocks=1, hidden_channels=4,
                                               gated_convolutions=True, dropout=0.3), **kwargs})


def _perturbed(model: tfnvp.RealNVP) -> tfnvp.RealNVP:
    """Weights away from the identity initialization (a new flow is the identity)."""
    perturb_weights(model.conditioners + model.statistics, scale=0.2)
    return model


@pytest.fixture(scope="module")
def model64() -> tfnvp.RealNVP:
    return _perturbed(_model(dtype="float64"))


def test_whole_flow_exact_against_numerical_jacobian(model64):
    assert all(block.gated and block.drop.rate == 0.3
               for c in model64.conditioners for block in c.body.blocks)
    x = tf.random.uniform((2, 4, 4, 2), 8.0, 248.0, dtype=tf.float64, seed=3)
    z = model64.bijector.inverse(x)
    logit_only = tfnvp.bijectors.LogitPreprocess().inverse(x)
    assert np.abs(z.numpy() - logit_only.numpy()).max() > 0.1
    errors = assert_exact_bijector(model64.bijector, tf.identity(z), event_ndims=3,
                                   graph_mode=False)
    print(f"gated RealNVP with dropout, evaluation mode: worst errors {errors}")
    np.testing.assert_allclose(model64.decode(model64.encode(tf.identity(x))).numpy(), x.numpy(),
                               atol=1e-8)


def test_model_dropout_in_training_only_and_evaluation_folds(model64, monkeypatch):
    x = tf.random.uniform((4, 4, 4, 2), 1.0, 255.0, dtype=tf.float64, seed=4)
    snapshot = [w.numpy() for w in model64.weights]
    first, second = (model64.nll(tf.identity(x), training=True).numpy() for _ in range(2))
    assert np.abs(first - second).max() > 1e-6
    for w, value in zip(model64.weights, snapshot):  # Training updated the statistics.
        w.assign(value)
    evaluation = model64.nll(tf.identity(x)).numpy()
    np.testing.assert_array_equal(model64.nll(tf.identity(x)).numpy(), evaluation)
    monkeypatch.setattr(resnet_lib, "FOLD_EVAL_BATCH_NORM", False)
    np.testing.assert_allclose(model64.nll(tf.identity(x)).numpy(), evaluation, rtol=1e-12)


def test_gradients_config_and_checkpoint_round_trip(tmp_path):
    model = _perturbed(_model(num_scales=1))
    x = tf.random.uniform((8, 4, 4, 2), 0.0, 256.0, seed=6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.nll(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    assert len(model.trainable_variables) == sum(len(c.trainable_weights)
                                                 for c in model.conditioners)
    missing = [v.path for v, g in zip(model.trainable_variables, grads)
               if g is None or not np.any(g.numpy())]
    assert not missing, f"weights without gradient: {missing}"

    config = model.get_config()
    assert config["gated_convolutions"] is True and config["dropout"] == 0.3
    plain = tfnvp.RealNVP((4, 4, 2), num_scales=1, num_res_blocks=1, hidden_channels=4)
    assert not {"gated_convolutions", "dropout"} & set(plain.get_config())
    log_prob = model.log_prob(x).numpy()
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    restored = tfnvp.RealNVP.from_config(config)
    assert restored.get_config() == config
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    assert len(restored.weights) == len(model.weights)
    for a, b in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    np.testing.assert_array_equal(restored.log_prob(x).numpy(), log_prob)


# -------------------------------------------------------------- bad arguments
@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan")])
def test_dropout_out_of_range_is_named(rate):
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        ResNet(8, 1, 4, dropout=rate)
    with pytest.raises(ValueError, match=r"dropout must be in \[0, 1\)"):
        _model(dropout=rate)


def test_dropout_with_recompute_gradients_is_refused():
    with pytest.raises(ValueError, match="recompute_gradients=True cannot be combined with "
                                         "dropout"):
        _model(recompute_gradients=True)
    with pytest.raises(ValueError, match="recompute_gradients"):
        ShiftAndLogScale(ResNet(8, 1, 4, dropout=0.1), 2, recompute_gradients=True)
    # Gated blocks alone recompute exactly: allowed.
    model = _model(num_scales=1, dropout=0.0, recompute_gradients=True)
    assert "dropout" not in model.get_config()


# ----------------------------------------------------------------- the trainer
def test_trainer_builds_the_model():
    flags = ("--num_scales=1", "--hidden_channels=4", "--gated_convolutions", "--dropout=0.2")
    model = training.build_model(trainer_spec(*flags, "--num_res_blocks=1", shape=(4, 4, 1)))
    assert (model.get_config()["gated_convolutions"], model.get_config()["dropout"]) == (True, 0.2)
    # Glow takes them too (tests/test_glow_flowpp.py).
    glow = training.build_model(trainer_spec(*flags, "--model=glow", "--steps_per_scale=1",
                                              shape=(4, 4, 1)))
    assert all(c.body.gated and c.body.drop.rate == 0.2 for c in glow.conditioners)


def test_every_replica_draws_its_own_mask():
    """Keras' Dropout under MirroredStrategy drops example i of every replica alike."""
    devices = tf.config.list_logical_devices("CPU")
    assert len(devices) == 2  # tests/conftest.py
    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        block = resnet_lib._ResidualBlock(4, False, dropout=0.5)
        block(tf.zeros((1, 4, 4, 4)))

    @tf.function
    def masks():
        return strategy.run(lambda: block.drop(tf.ones((2, 4, 4, 4)), training=True))

    first = [t.numpy() for t in strategy.experimental_local_results(masks())]
    assert all(set(np.unique(m)) == {0.0, 2.0} for m in first)
    assert not np.array_equal(first[0], first[1])
    second = [t.numpy() for t in strategy.experimental_local_results(masks())]
    assert not np.array_equal(first[0], second[0])  # A new mask every step.
