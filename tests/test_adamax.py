"""GlowAdamax: the Adamax of Glow's release (openai/glow optim.py), against a NumPy
transcription of its update, in float64."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnvp import GlowAdamax
from trainers.steps import pre_reduced

_STEPS = 7
_LR = 0.0625  # Exact in float32: Keras keeps the learning rate in a float32 variable.
_BETA_2 = 1 - 1 / 782  # CIFAR-10's in the release: 50000 images in batches of 64.


def _initial():
    return [np.linspace(-1.0, 1.0, 6).reshape(2, 3), np.array([0.5, -2.0])]


def _gradient(value, step):
    # Signs and sizes change between steps, so that u's maximum takes both branches.
    return np.sin(value * (step + 1.0)) * (3.0 if step % 3 == 0 else 0.2)


def _release(beta_1=0.9, beta_2=_BETA_2, epsilon=1e-8):
    """optim.py's adamax (weight_decay 1: off), transcribed to NumPy: t starts at 1."""
    values = _initial()
    mom1 = [np.zeros_like(v) for v in values]
    mom2 = [np.zeros_like(v) for v in values]
    t = 1.0
    for step in range(_STEPS):
        alpha_t = _LR * np.sqrt(1.0 - beta_2 ** t) / (1.0 - beta_1 ** t)
        t += 1
        for k, w in enumerate(values):
            g = _gradient(w, step)
            mom1[k] = beta_1 * mom1[k] + (1.0 - beta_1) * g
            mom2[k] = np.maximum(beta_2 * mom2[k], abs(g))
            values[k] = w - alpha_t * (mom1[k] / (mom2[k] + epsilon))
    return values, mom1, mom2


def _train(make_optimizer, strategy=None):
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        variables = [keras.Variable(v, dtype="float64") for v in _initial()]
        optimizer = make_optimizer()
        optimizer.build(variables)

    @tf.function
    def step(i):
        def replica():
            scale = tf.where(i % 3 == 0, tf.constant(3.0, tf.float64), 0.2)
            grads = [tf.sin(v.value * tf.cast(i + 1, tf.float64)) * scale for v in variables]
            optimizer.apply(grads, variables)
        strategy.run(replica)

    for i in range(_STEPS):
        step(tf.constant(i))
    return variables, optimizer


@pytest.mark.parametrize("replicas", [1, 2])
def test_matches_the_release_update_in_float64(replicas):
    strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if replicas == 2 else None)
    optimizer_class = pre_reduced(GlowAdamax) if replicas == 2 else GlowAdamax
    variables, optimizer = _train(
        lambda: optimizer_class(learning_rate=_LR, beta_2=_BETA_2), strategy)
    values, mom1, mom2 = _release()
    for variable, expected in zip(variables, values):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=0, atol=1e-12)
    for slot, expected in zip(optimizer._m + optimizer._u, mom1 + mom2):
        np.testing.assert_allclose(slot.numpy(), expected, rtol=0, atol=1e-12)
    assert int(optimizer.iterations.numpy()) == _STEPS


def test_differs_from_keras_adamax_by_the_second_moment_correction():
    """Keras' Adamax (Kingma & Ba's Algorithm 2) has no sqrt(1 - beta_2^t) factor: on the
    release's beta_2 its first step is about 1 / sqrt(1 - beta_2) = 28 times larger."""
    ours, _ = _train(lambda: GlowAdamax(learning_rate=_LR, beta_2=_BETA_2))
    keras_, _ = _train(lambda: keras.optimizers.Adamax(learning_rate=_LR, beta_2=_BETA_2,
                                                       epsilon=1e-8))
    assert not np.allclose(ours[0].numpy(), keras_[0].numpy(), rtol=0, atol=1e-3)


def test_config_round_trip_and_checkpoint(tmp_path):
    variables, optimizer = _train(lambda: GlowAdamax(learning_rate=_LR, beta_2=_BETA_2))
    config = optimizer.get_config()
    assert config["epsilon"] == 1e-8 and config["beta_2"] == _BETA_2
    assert GlowAdamax.from_config(config).get_config() == config
    assert isinstance(keras.optimizers.deserialize(keras.optimizers.serialize(optimizer)),
                      GlowAdamax)
    path = tf.train.Checkpoint(variables=variables, optimizer=optimizer).write(
        str(tmp_path / "ckpt"))
    restored = [keras.Variable(np.zeros_like(v.numpy())) for v in variables]
    other = GlowAdamax(learning_rate=_LR, beta_2=_BETA_2)
    other.build(restored)
    tf.train.Checkpoint(variables=restored, optimizer=other).read(path).assert_consumed()
    for a, b in zip(optimizer.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
