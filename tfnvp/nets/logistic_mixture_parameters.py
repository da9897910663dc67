"""The conditioner head of the logistic-mixture CDF coupling (Flow++, Ho et al. 2019, section 3.2).

A conditioner body (``ResNet`` for images, an MLP for vectors) produces
``(3K + 2) * channels`` features, read as ``3K + 2`` parameter maps per
channel of the coupled tensor::

    a        = scale * tanh(raw_a)              log-scale of the outer affine map
    b        = raw_b                            its shift
    log pi_k = log_softmax(raw_logits)_k        mixture weights, k = 1..K
    mu_k     = raw_mu_k + offset_k              component locations
    s_k      = max(2 - softplus(2 - raw_s_k), -7)   component log-scales, in [-7, 2)

``scale`` (per channel, initially 1) bounds ``a`` as ``ShiftAndLogScale``
bounds its log-scale.  Flow++'s release (aravindsrinivas/flowpp,
``MixLogisticAttnCoupling``) uses a plain ``a = tanh(raw_a)``: ours equals it
at the initial ``scale = 1`` and lets the bound be learned;
``s_k >= -7`` is the release's floor on the component log-scales (the
components stay wider than ``exp(-7)``).

``s_k < 2`` (a smooth cap, ours; the release has none) keeps sampling
finite.  In the latent -> data direction the coupling's tails are linear
with slope ``exp(max_k s_k - a)``, so an uncapped ``s_k`` lets a large input
become a larger one whose conditioner then emits a larger ``s_k``: with
moderately perturbed weights (``tests/test_logistic_mixture_coupling.py``)
every sample of a two-scale model overflowed to NaN, and trained CIFAR-10
models drew NaN blocks.  With the cap the amplification per coupling is at
most ``exp(2 + |a|)``, as bounded as the affine coupling's; components
``e**2`` times wider than the (batch-normalized) data add nothing to the
density.  ``offset_k`` is a learned
per-channel location, initially ``K`` values evenly spaced in ``[-1, 1]``:
the body's last layer starts at zero, and with equal initial locations the
``K`` components would receive identical gradients and never separate.  With
the body at zero the coupling is therefore close to, not exactly, the
identity: ``y = logit(mean_k sigmoid(x - offset_k))``.

Conditioning (``context``), mixed precision and ``recompute_gradients`` work
as in ``tfnvp.nets.ShiftAndLogScale`` (``body_features``).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfnvp.errors import UsageError
from tfnvp.nets.shift_and_log_scale import BodyConfig, body_features, check_recomputable

__all__ = ["LogisticMixtureParameters", "MIN_COMPONENT_LOG_SCALE", "MAX_COMPONENT_LOG_SCALE"]

#: Floor of the component log-scales ``s_k`` (Flow++'s release).
MIN_COMPONENT_LOG_SCALE = -7.0
#: Smooth cap of the component log-scales (keeps sampling finite; module docstring).
MAX_COMPONENT_LOG_SCALE = 2.0


@keras.saving.register_keras_serializable(package="tfnvp")
class LogisticMixtureParameters(BodyConfig, keras.layers.Layer):
    """Maps ``b * x`` to ``(a, b, log_weights, means, log_scales)``.

    ``a`` and ``b`` have the shape of ``x`` (``[..., channels]``), the three
    mixture parameters one more axis of ``components`` entries
    (``[..., channels, K]``); see the module docstring for the math.

    Args:
      body: a Keras layer producing ``(3 * components + 2) * channels``
        features whose last layer starts at zero.
      channels: the size of the coupled tensor's last axis.
      components: ``K``, the number of logistic components per entry.
      recompute_gradients: see ``tfnvp.nets.ShiftAndLogScale``.
    """

    def __init__(self, body: keras.layers.Layer, channels: int, components: int = 4,
                 recompute_gradients: bool = False, **kwargs):
        super().__init__(**kwargs)
        if int(components) < 1:
            raise UsageError(f"components must be at least 1, got {components!r}.")
        self.body = body
        self.channels = int(channels)
        self.components = int(components)
        self.recompute_gradients = bool(recompute_gradients)
        check_recomputable(body, self.recompute_gradients)
        self.scale = self.add_weight(name="log_scale_factor", shape=(self.channels,),
                                     initializer="ones")
        spread = np.linspace(-1.0, 1.0, self.components) if self.components > 1 else np.zeros(1)
        self.offsets = self.add_weight(
            name="mean_offsets", shape=(self.channels, self.components),
            initializer=keras.initializers.Constant(np.tile(spread, (self.channels, 1))))

    @staticmethod
    def output_channels(channels: int, components: int) -> int:
        """Features the body must produce: ``(3K + 2)`` maps per channel."""
        return (3 * int(components) + 2) * int(channels)

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "components": self.components,
                "recompute_gradients": self.recompute_gradients}

    def compute_output_shape(self, x_shape: tuple[int | None, ...],
                             context_shape: tuple[int | None, ...] | None = None
                             ) -> tuple[tuple[int | None, ...], ...]:
        """The shapes of ``call``'s five outputs: ``x``'s, twice, then ``[..., channels, K]``
        three times."""
        shape = tuple(x_shape[:-1]) + (self.channels,)
        return (shape, shape) + (shape + (self.components,),) * 3

    def call(self, x: tf.Tensor, training: bool = False, context: tf.Tensor | None = None
             ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        raw = body_features(self, x, training, context)
        per_channel = 3 * self.components + 2
        raw = tf.reshape(raw, tf.concat([tf.shape(raw)[:-1], [self.channels, per_channel]], 0))
        raw_a, shift, logits, means, log_scales = tf.split(
            raw, [1, 1, self.components, self.components, self.components], axis=-1)
        log_scale = tf.convert_to_tensor(self.scale) * tf.tanh(raw_a[..., 0])
        cap = tf.cast(MAX_COMPONENT_LOG_SCALE, raw.dtype)
        log_scales = cap - tf.nn.softplus(cap - log_scales)
        return (log_scale, shift[..., 0], tf.nn.log_softmax(logits, axis=-1),
                means + tf.convert_to_tensor(self.offsets),
                tf.maximum(log_scales, tf.cast(MIN_COMPONENT_LOG_SCALE, raw.dtype)))
