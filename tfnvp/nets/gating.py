"""Flow++'s gated linear unit and dropout, shared by the conditioner networks.

Flow++ (Ho et al. 2019, section 3.3 and appendix) builds its conditioners
from gated convolutions, "h + GLU(conv(nonlinearity(conv(nonlinearity(h)))))",
with dropout (0.2 on CIFAR-10) before the last convolution.  The pieces,
used by ``tfnvp.nets.ResNet`` (residual blocks), ``tfnvp.nets.GlowNet``
(Glow's hidden layer) and ``tfnvp.nets.GatedAttention`` (its output)::

    gated_linear_unit(u) = a * sigmoid(g),  (a, g) = split(u, 2)   (Dauphin et al., 2017)
    ReplicaDropout(p)(u) = u * m / (1 - p),  m ~ Bernoulli(1 - p)   in training mode only

``dropped`` applies a layer's dropout when the mode asks for it (training,
not batch-norm recalibration, which measures the statistics of the
evaluation-mode network); ``check_dropout`` validates a rate; ``flowpp_options`` gives a layer's
``gated``/``dropout`` configuration entries only when they differ from the
defaults (so that configurations written before the options existed stay
as they were).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnvp import running_average
from tfnvp.errors import UsageError

__all__ = ["ReplicaDropout", "check_dropout", "dropped", "flowpp_options", "gated_linear_unit"]


@tf.custom_gradient
def _halves(features: tf.Tensor):
    """``tf.split(features, 2, axis=-1)``, whose gradient builds its own axis constant.

    ``tf.split``'s gradient reads the forward op's axis tensor; inside a shared body's
    not-inlined function (``tfnvp.nets.shared_body``) that tensor becomes an output of the
    function, which XLA then needs as a compile-time constant, and it compiles the caller
    again at every step with every input as a constant."""
    half = features.shape[-1] // 2

    def gradient(d_first: tf.Tensor, d_second: tf.Tensor) -> tf.Tensor:
        return tf.concat([d_first, d_second], axis=-1)

    return (features[..., :half], features[..., half:]), gradient


def gated_linear_unit(features: tf.Tensor) -> tf.Tensor:
    """``a * sigmoid(g)`` of the two halves ``(a, g)`` of the last axis (``2C -> C``)."""
    linear, gate = _halves(features)
    return linear * tf.sigmoid(gate)


def check_dropout(rate: float) -> float:
    """``rate`` as a float if ``0 <= rate < 1``, else a ValueError naming ``dropout``."""
    rate = float(rate)
    if not 0.0 <= rate < 1.0:  # Also refuses NaN.
        raise UsageError(f"dropout must be in [0, 1) (the fraction of hidden activations "
                         f"dropped in training), got {rate!r}.")
    return rate


def flowpp_options(gated: bool, dropout: float) -> dict:
    """The ``gated``/``dropout`` configuration entries that differ from the defaults
    (none for a plain layer: existing configurations stay as they were)."""
    return {**({"gated": True} if gated else {}), **({"dropout": dropout} if dropout else {})}


class ReplicaDropout(keras.layers.Dropout):
    """``keras.layers.Dropout`` whose mask also depends on the replica.

    Under ``tf.distribute`` the layer's seed generator is a mirrored variable,
    so Keras' dropout would draw the same mask on every replica (example ``i``
    of each replica's batch dropped alike).  Here replica ``r`` draws with the
    seed ``(s + r, n)`` instead of ``(s, n)``: independent masks across the
    global batch.  The same inverted dropout otherwise (``noise_shape`` unused).
    """

    def call(self, inputs: tf.Tensor, training: bool = False) -> tf.Tensor:
        if not (training and self.rate > 0):
            return inputs
        seed = self.seed_generator.next()
        context = tf.distribute.get_replica_context()
        if context is not None:
            replica = tf.cast(context.replica_id_in_sync_group, seed.dtype)
            seed = seed + tf.stack([replica, tf.zeros_like(replica)])
        # int32 seeds (as Keras' own dropout): XLA's stateless random ops need them.
        seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
        return tf.nn.experimental.stateless_dropout(inputs, rate=self.rate, seed=seed)


def dropped(drop: ReplicaDropout | None, features: tf.Tensor,
            training: running_average.Training) -> tf.Tensor:
    """``drop(features)`` in training mode; ``features`` unchanged without a dropout
    layer, in evaluation mode and when recalibrating (``training=RECALIBRATE``)."""
    if drop is None or not training or running_average.is_cumulative(training):
        return features
    return drop(features, training=True)
