"""The coupling layer's s and t heads with a bounded log-scale.

A conditioner body (``ResNet`` for images, an MLP for vectors) produces
``2 * channels`` features; they are split into a shift ``t`` and a raw
log-scale, which is bounded as ``s = scale * tanh(raw)`` with a learned
per-channel ``scale`` (the original implementation's stabilization of eq. (9)).
The head computes in the model's dtype (float32 or float64) even when the
body runs in bfloat16/float16, so the coupling arithmetic and log-dets keep
full precision and the flow stays exactly invertible.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["ShiftAndLogScale"]


class ShiftAndLogScale(keras.layers.Layer):
    """Maps ``b * x`` to ``(shift, log_scale)``, each with ``channels`` features.

    Args:
      body: a Keras layer producing ``2 * channels`` features whose last layer
        starts at zero (then ``shift = log_scale = 0``: an identity coupling).
      channels: the size of the coupled tensor's last axis.
    """

    def __init__(self, body: keras.layers.Layer, channels: int, **kwargs):
        super().__init__(**kwargs)
        self.body = body
        self.channels = int(channels)
        self.scale = self.add_weight(name="log_scale_factor", shape=(self.channels,),
                                     initializer="ones")

    def call(self, x: tf.Tensor, training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        raw = tf.cast(self.body(x, training=training), self.variable_dtype)
        shift, raw_log_scale = tf.split(raw, 2, axis=-1)
        return shift, tf.convert_to_tensor(self.scale) * tf.tanh(raw_log_scale)
