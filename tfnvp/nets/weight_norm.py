"""Weight-normalized 2-D convolution (Salimans & Kingma, 2016).

Real NVP's conditioners use weight normalization (section 3.7): each output
filter is ``w = g * v / ||v||`` with the norm over the filter's
``(height, width, in_channels)`` entries, which decouples the filter's length
``g`` from its direction ``v``.

Performance notes:

* the kernel is computed from the float32 (variable-dtype) ``v`` and ``g``
  and cast to the compute dtype once, so under a mixed policy
  (``"mixed_bfloat16"``) the normalization itself keeps float32 precision and
  only the convolution runs in bfloat16;
* the bias is added with ``tf.nn.bias_add``, which Grappler's remapper fuses
  with the convolution into one oneDNN primitive (``_FusedConv2D``); an
  ``AddV2`` of the same values is not fused.
"""

from __future__ import annotations

import keras
import tensorflow as tf

__all__ = ["WeightNormConv2D"]


@keras.saving.register_keras_serializable(package="tfnvp")
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
        # autocast=False: the weights are read in their own (variable) dtype and
        # the finished kernel is cast to the compute dtype in `call`.
        self.direction = self.add_weight(
            name="v", shape=(self.kernel_size, self.kernel_size, in_channels, self.filters),
            initializer=keras.initializers.HeNormal(), autocast=False)
        self.gain = self.add_weight(name="g", shape=(self.filters,),
                                    initializer=self.gain_initializer, autocast=False)
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros",
                                    autocast=False)

    def normalized_kernel(self) -> tf.Tensor:
        """``g * v / ||v||`` in the variable dtype."""
        v = tf.convert_to_tensor(self.direction)
        return v * (tf.convert_to_tensor(self.gain) * tf.math.rsqrt(
            tf.reduce_sum(tf.square(v), axis=[0, 1, 2]) + 1e-12))

    def call(self, x: tf.Tensor) -> tf.Tensor:
        kernel = tf.cast(self.normalized_kernel(), x.dtype)
        bias = tf.cast(tf.convert_to_tensor(self.bias), x.dtype)
        return tf.nn.bias_add(tf.nn.conv2d(x, kernel, strides=1, padding="SAME"), bias)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": self.filters,
                "kernel_size": self.kernel_size, "gain_initializer": self.gain_initializer}
