"""Residual conditioner network for image coupling layers (section 3.7).

The s and t functions of a coupling layer are one deep convolutional ResNet
(He et al., 2016) with batch normalization and weight normalization::

    h = conv3x3(x)
    repeat num_blocks:  h = h + conv3x3(relu(bn(conv3x3(relu(bn(h))))))
    out = conv3x3(relu(bn(h)))          # 2 * out_channels features, zero gain

The residual connections are the network's skip connections.  The last
convolution starts with zero gain, so a new coupling layer is the identity.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnvp.nets.weight_norm import WeightNormConv2D

__all__ = ["ResNet"]


class _ResidualBlock(keras.layers.Layer):
    """``h + conv(relu(bn(conv(relu(bn(h))))))``."""

    def __init__(self, channels: int, synchronized: bool, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.synchronized = bool(synchronized)
        self.norm_in = keras.layers.BatchNormalization(synchronized=synchronized, dtype=self.dtype_policy)
        self.conv_in = WeightNormConv2D(channels, dtype=self.dtype_policy)
        self.norm_out = keras.layers.BatchNormalization(synchronized=synchronized, dtype=self.dtype_policy)
        self.conv_out = WeightNormConv2D(channels, dtype=self.dtype_policy)

    def call(self, h: tf.Tensor, training: bool = False) -> tf.Tensor:
        out = self.conv_in(tf.nn.relu(self.norm_in(h, training=training)))
        out = self.conv_out(tf.nn.relu(self.norm_out(out, training=training)))
        return h + out

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels,
                "synchronized": self.synchronized}


class ResNet(keras.layers.Layer):
    """Conditioner body: ``[..., H, W, C_in] -> [..., H, W, out_channels]``.

    Args:
      hidden_channels: feature maps of every hidden convolution.
      num_blocks: number of residual blocks.
      out_channels: output features (``2 * C`` for a shift and a log-scale).
      synchronized_batch_norm: all-reduce batch-norm statistics across
        replicas under ``tf.distribute``.
    """

    def __init__(self, hidden_channels: int, num_blocks: int, out_channels: int,
                 synchronized_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        if hidden_channels < 1 or num_blocks < 0 or out_channels < 1:
            raise ValueError("ResNet needs hidden_channels >= 1, num_blocks >= 0 and "
                             f"out_channels >= 1, got {hidden_channels}, {num_blocks}, {out_channels}.")
        self.hidden_channels = int(hidden_channels)
        self.num_blocks = int(num_blocks)
        self.out_channels = int(out_channels)
        self.synchronized_batch_norm = bool(synchronized_batch_norm)
        policy = self.dtype_policy
        self.conv_in = WeightNormConv2D(hidden_channels, dtype=policy)
        self.blocks = [_ResidualBlock(hidden_channels, synchronized_batch_norm, dtype=policy,
                                      name=f"block_{i}") for i in range(num_blocks)]
        self.norm_out = keras.layers.BatchNormalization(
            synchronized=synchronized_batch_norm, dtype=policy)
        self.conv_out = WeightNormConv2D(out_channels, gain_initializer="zeros", dtype=policy)

    def call(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        h = self.conv_in(x)
        for block in self.blocks:
            h = block(h, training=training)
        return self.conv_out(tf.nn.relu(self.norm_out(h, training=training)))

    def get_config(self) -> dict:
        return {**super().get_config(), "hidden_channels": self.hidden_channels,
                "num_blocks": self.num_blocks, "out_channels": self.out_channels,
                "synchronized_batch_norm": self.synchronized_batch_norm}
