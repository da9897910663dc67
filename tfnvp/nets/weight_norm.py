"""Weight-normalized 2-D convolution (Salimans & Kingma, 2016).

Real NVP's conditioners use weight normalization (section 3.7): each output
filter is ``w = g * v / ||v||`` with the norm over the filter's
``(height, width, in_channels)`` entries, which decouples the filter's length
``g`` from its direction ``v``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["WeightNormConv2D"]


class WeightNormConv2D(keras.layers.Layer):
    """``conv2d(x, g * v / ||v||) + bias`` with 'SAME' padding, stride 1.

    Args:
      filters: number of output channels.
      kernel_size: square kernel size.
      gain_initializer: initializer of ``g``; ``'zeros'`` makes the layer
        output exactly ``bias`` (zero) at initialization, which is how a new
        coupling layer starts as the identity.
    """

    def __init__(self, filters: int, kernel_size: int = 3, gain_initializer: str = "ones",
                 **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.gain_initializer = gain_initializer

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        in_channels = int(input_shape[-1])
        self.direction = self.add_weight(
            name="v", shape=(self.kernel_size, self.kernel_size, in_channels, self.filters),
            initializer=keras.initializers.HeNormal())
        self.gain = self.add_weight(name="g", shape=(self.filters,),
                                    initializer=self.gain_initializer)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, x: tf.Tensor) -> tf.Tensor:
        v = tf.convert_to_tensor(self.direction)
        kernel = v * (tf.convert_to_tensor(self.gain) * tf.math.rsqrt(
            tf.reduce_sum(tf.square(v), axis=[0, 1, 2]) + 1e-12))
        return tf.nn.conv2d(x, kernel, strides=1, padding="SAME") + tf.convert_to_tensor(self.bias)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "gain_initializer": self.gain_initializer}
