"""Gated multi-head self-attention over an image's positions (Flow++, section 3.3).

Ho et al. (2019) put self-attention into the coupling conditioners: each of
their conditioner blocks ends in "gated multi-head self-attention" over the
``N = H * W`` spatial positions, with a residual connection and layer
normalization.  For an input ``x`` ``[..., H, W, C]`` and ``heads`` heads of
``d = C / heads`` features::

    q, k, v = split(conv1x1(x + P))               P: position encoding (below)
    A_h = softmax(q_h k_h^T / sqrt(d)) v_h        per head, over the N positions
    a, g = split(conv1x1(concat_h A_h))           2 * C features
    out = layer_norm(x + a * sigmoid(g))          gated linear unit, residual

(``conv1x1`` are weight-normalized 1x1 convolutions, ``WeightNormConv2D``;
the layer norm is over the ``C`` channels of each position.)

Position encoding: the ``N`` positions are a set to the attention; Flow++
adds a learned ``[H, W, C]`` embedding, which fixes the image size.  Here
``P`` is a fixed 2-D sinusoidal encoding computed from the input's (dynamic)
height and width, so the same weights run at any image size
(``ImageFlowModel.distribution_for``): with ``m = C // 4``, channels ``4i ..
4i + 3`` hold ``sin(f_i r), cos(f_i r), sin(f_i c), cos(f_i c)`` of the row
``r`` and column ``c``, ``f_i = 2 pi / 2^(i + 2)`` (wavelengths 4, 8, 16, ...
pixels), and the remaining ``C - 4m`` channels are 0.  With
``position_encoding=False`` the layer is equivariant to any permutation of
the positions.

Precision: under a mixed policy (``"mixed_float16"``, ``"mixed_bfloat16"``)
the convolutions and the value product run in the compute dtype, while the
attention logits, the softmax and the layer norm are computed in the
variable dtype (float32): the inputs are cast up before them, by
construction.  In float64 everything is float64.
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from tfnvp.errors import UsageError
from tfnvp.nets.gating import gated_linear_unit
from tfnvp.nets.weight_norm import WeightNormConv2D

__all__ = ["GatedAttention", "sinusoidal_position_encoding"]


def sinusoidal_position_encoding(height: tf.Tensor | int, width: tf.Tensor | int, channels: int,
                                 dtype: tf.DType | str = tf.float32) -> tf.Tensor:
    """The module docstring's ``P``: ``[height, width, channels]``, sizes may be dynamic."""
    num_frequencies = channels // 4
    frequencies = 2.0 * math.pi / 2.0 ** tf.range(2.0, num_frequencies + 2.0, dtype=tf.float32)
    rows = tf.cast(tf.range(height), tf.float32)[:, None] * frequencies  # [H, m]
    cols = tf.cast(tf.range(width), tf.float32)[:, None] * frequencies  # [W, m]
    shape = tf.stack([height, width, num_frequencies])
    features = tf.stack([tf.broadcast_to(tf.sin(rows)[:, None], shape),
                         tf.broadcast_to(tf.cos(rows)[:, None], shape),
                         tf.broadcast_to(tf.sin(cols)[None], shape),
                         tf.broadcast_to(tf.cos(cols)[None], shape)], axis=-1)
    features = tf.reshape(features, tf.stack([height, width, 4 * num_frequencies]))
    features = tf.pad(features, [[0, 0], [0, 0], [0, channels - 4 * num_frequencies]])
    return tf.cast(features, dtype)


@keras.saving.register_keras_serializable(package="tfnvp")
class GatedAttention(keras.layers.Layer):
    """``layer_norm(x + GLU(multi_head_attention(x)))`` over the positions of ``[..., H, W, C]``.

    See the module docstring for the math, the position encoding and the
    precision.  Any number of leading batch axes and any ``H``, ``W`` (also
    unknown until run time).

    Args:
      channels: ``C``, the input's (and output's) last axis.
      heads: attention heads; must divide ``channels``.
      position_encoding: add the sinusoidal encoding to the queries', keys'
        and values' input; False: permutation-equivariant over positions.
      **kwargs: forwarded to ``keras.layers.Layer`` (``dtype``, ``name``).
    """

    def __init__(self, channels: int, heads: int = 4, position_encoding: bool = True, **kwargs):
        super().__init__(**kwargs)
        if heads < 1 or channels < 1 or channels % heads:
            raise UsageError(f"GatedAttention: heads ({heads}) must be >= 1 and divide channels "
                             f"({channels}).")
        self.channels = int(channels)
        self.heads = int(heads)
        self.position_encoding = bool(position_encoding)
        policy = self.dtype_policy
        self.qkv = WeightNormConv2D(3 * channels, kernel_size=1, dtype=policy, name="qkv")
        self.gate = WeightNormConv2D(2 * channels, kernel_size=1, dtype=policy, name="gate")
        # Statistics in the variable dtype (float32 under a mixed policy).
        self.norm = keras.layers.LayerNormalization(dtype=policy.variable_dtype, name="norm")

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        """Creates every weight from the input shape, without tracing ``call``."""
        shape = tuple(input_shape[:-1]) + (self.channels,)
        for layer in (self.qkv, self.gate, self.norm):
            layer.build(shape)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(x)
        if x.shape[-1] != self.channels:
            raise ValueError(f"GatedAttention({self.channels} channels) got input of shape "
                             f"{x.shape}.")
        shape = tf.shape(x)
        inputs = x
        if self.position_encoding:
            inputs = x + sinusoidal_position_encoding(shape[-3], shape[-2], self.channels, x.dtype)
        head_dim = self.channels // self.heads
        qkv = tf.reshape(self.qkv(inputs), [-1, shape[-3] * shape[-2], 3, self.heads, head_dim])
        query, key, value = tf.unstack(qkv, axis=2)  # [B, N, heads, d]
        wide = self.dtype_policy.variable_dtype
        logits = tf.einsum("bnhd,bmhd->bhnm", tf.cast(query, wide), tf.cast(key, wide))
        weights = tf.nn.softmax(logits * (1.0 / math.sqrt(head_dim)), axis=-1)
        attended = tf.einsum("bhnm,bmhd->bnhd", tf.cast(weights, value.dtype), value)
        attended = tf.reshape(attended, shape)
        attended.set_shape(x.shape)
        out = x + gated_linear_unit(self.gate(attended))
        return tf.cast(self.norm(tf.cast(out, wide)), x.dtype)

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "heads": self.heads,
                "position_encoding": self.position_encoding}
