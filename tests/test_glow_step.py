"""A Glow step of flow (actnorm, 1x1 convolution, coupling) owned by a keras.Model.

Trains: every weight gets a gradient; checkpoints: every weight (the actnorms'
``initialized`` flags, the fixed permutation and signs included) round-trips
through ``tf.train.Checkpoint``, and the restored model does not initialize
again.
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors import (ActNorm, ActNormParameters, FusedChain, InvertibleConv1x1,
                             InvertibleConv1x1Weights, glow_coupling)
from tfnvp.nets.glow_net import GlowAffineHead, GlowNet
from tfnvp.nets.tracking import track_layers

CHANNELS = 4


class _GlowSteps(keras.Model):
    """Two Glow steps on ``[4, 4, 4]`` events (the coupling parities alternate)."""

    def __init__(self):
        super().__init__()
        self.actnorms = track_layers(self, "actnorm", [ActNormParameters(CHANNELS) for _ in range(2)])
        self.convs = track_layers(self, "conv", [InvertibleConv1x1Weights(CHANNELS, seed=k)
                                                 for k in range(2)])
        self.heads = track_layers(self, "head", [
            GlowAffineHead(GlowNet(CHANNELS, hidden_channels=8), CHANNELS, parity=k % 2)
            for k in range(2)])

    def distribution(self) -> tfp.distributions.Distribution:
        # The chain's inverse (data -> latent) runs its list first to last:
        # actnorm, 1x1 convolution, coupling, as in Glow.
        steps = []
        for actnorm, conv, head in zip(self.actnorms, self.convs, self.heads):
            steps += [ActNorm(actnorm), InvertibleConv1x1(conv), glow_coupling(head)]
        chain = FusedChain(steps)
        base = tfp.distributions.Sample(tfp.distributions.Normal(0.0, 1.0), [4, 4, CHANNELS])
        return tfp.distributions.TransformedDistribution(base, chain)

    def nll(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        # A fresh tensor, as FlowModel's methods do: TFP's cache would answer a
        # reused tensor with its result from before a weight update or restore.
        return -tf.reduce_mean(self.distribution().log_prob(
            tf.identity(x), bijector_kwargs=dict(training=training)))


def _initialize(model: _GlowSteps, x: tf.Tensor) -> None:
    """Glow's data-dependent initialization: the first training-mode pass.

    ``training=True`` travels through the chain to every ActNorm (and the
    conditioners' own), each initialized in data -> latent order from the
    batch as it reaches it.
    """
    model.nll(x, training=True)


def _gradients(model: _GlowSteps, x: tf.Tensor) -> list:
    with tf.GradientTape() as tape:
        loss = model.nll(x, training=True)
    return tape.gradient(loss, model.trainable_weights)


def test_every_weight_is_trained():
    model, x = _GlowSteps(), _data(0)
    _initialize(model, x)
    assert all(float(a.initialized.numpy()) == 1.0 for a in model.actnorms)
    assert all(float(h.body.norm_in.initialized.numpy()) == 1.0 for h in model.heads)
    # 2 x (actnorm 2 + conv 3 + net 2 conv kernels, 2 actnorms x 2, out kernel/bias/logs 3).
    assert len(model.trainable_weights) == 2 * (2 + 3 + 2 + 4 + 3)
    optimizer = keras.optimizers.Adam(1e-2)
    # A new coupling network outputs zeros (zero-initialized last layer), which blocks
    # the gradient of the layers before it; after one step every weight has one.
    optimizer.apply_gradients(zip(_gradients(model, x), model.trainable_weights))
    for variable, grad in zip(model.trainable_weights, _gradients(model, x)):
        assert grad is not None and np.abs(grad.numpy()).max() > 0, variable.path


def test_checkpoint_round_trip_keeps_the_initialization(tmp_path):
    model, x = _GlowSteps(), _data(0)
    _initialize(model, x)
    optimizer = keras.optimizers.Adam(1e-2)
    for _ in range(2):
        optimizer.apply_gradients(zip(_gradients(model, x), model.trainable_weights))
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    expected = model.nll(x, training=False).numpy()

    restored = _GlowSteps()
    restored.nll(x, training=False)  # Builds the convolutions; evaluation never initializes.
    assert all(float(a.initialized.numpy()) == 0.0 for a in restored.actnorms)
    tf.train.Checkpoint(model=restored).read(path).assert_existing_objects_matched()
    assert len(restored.weights) == len(model.weights)
    for saved, loaded in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy(), err_msg=saved.path)
    _initialize(restored, _data(1))  # Already initialized: must change nothing.
    for saved, loaded in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy(), err_msg=saved.path)
    np.testing.assert_allclose(restored.nll(x, training=False).numpy(), expected, rtol=1e-6)


def _data(seed: int) -> tf.Tensor:
    rng = np.random.default_rng(seed)
    return tf.constant(3.0 * rng.standard_normal((8, 4, 4, CHANNELS)) + 1.0, tf.float32)
