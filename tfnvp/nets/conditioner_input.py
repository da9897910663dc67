"""The prepared input of Real NVP's conditioners, as in the authors' release.

The authors' release (tensorflow/models ``research/real_nvp``,
``masked_conv_aff_coupling`` and ``conv_ch_aff_coupling``) does not feed the
masked input ``b * x`` straight to the s/t ResNet.  It prepares it::

    checkerboard mask b:   u = 2 * bn(b * x)          in = relu([u, -u, b])   2C + 1 features
    channel mask:          u = bn(x_kept)             in = relu([u, -u])      C features

``bn`` is a batch normalization without a learned scale (``beta`` only; the
release's ``scale=False``), with its own running statistics (release:
momentum 0.9, epsilon 1e-4); ``[u, -u]`` followed by the ReLU is a
concatenated ReLU, which keeps both signs of every normalized entry; ``b``
is the checkerboard mask itself, one extra channel telling every
convolution which positions are the conditioning ones.  A channel coupling's
network sees only the kept half of the channels (``x_kept``, ``C / 2`` of
them: the first half for parity 0, the second for parity 1), not ``b * x``
with its zeros.

Conditioning inputs: the features after the coupled tensor's ``channels``
(a ``context`` appended by ``tfnvp.nets.ShiftAndLogScale``) are passed on
unchanged after the prepared ones.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnvp import running_average
from tfnvp.bijectors.coupling import MASK_TYPES, checkerboard_mask
from tfnvp.errors import UsageError
from tfnvp.nets.batch_norm import BatchNormalization

__all__ = ["ConditionerInput", "RELEASE_BATCH_NORM_EPSILON", "RELEASE_BATCH_NORM_MOMENTUM"]

#: The momentum and epsilon of the release's batch norms in the conditioners (``decay=.1``,
#: ``epsilon=1e-4``).
RELEASE_BATCH_NORM_MOMENTUM = 0.9
RELEASE_BATCH_NORM_EPSILON = 1e-4


@keras.saving.register_keras_serializable(package="tfnvp")
class ConditionerInput(keras.layers.Layer):
    """``[..., H, W, channels + K] -> [..., H, W, features(channels) + K]`` (module docstring).

    Args:
      channels: the coupled tensor's channels ``C`` (the input's first ``C``
        features are ``b * x``; the rest is context, passed on unchanged).
      mask: ``"checkerboard"`` or ``"channel"``, the coupling's mask.
      parity: the coupling's parity (``tfnvp.bijectors.AffineCoupling``).
      batch_norm_momentum, batch_norm_epsilon: the batch norm's.
      synchronized_batch_norm: all-reduce its statistics across replicas.
    """

    def __init__(self, channels: int, mask: str, parity: int = 0,
                 batch_norm_momentum: float = RELEASE_BATCH_NORM_MOMENTUM,
                 batch_norm_epsilon: float = RELEASE_BATCH_NORM_EPSILON,
                 synchronized_batch_norm: bool = False, **kwargs):
        super().__init__(**kwargs)
        if mask not in MASK_TYPES or parity not in (0, 1):
            raise UsageError(f"ConditionerInput needs mask in {MASK_TYPES} and parity 0 or 1, "
                             f"got mask={mask!r}, parity={parity!r}.")
        if mask == "channel" and channels % 2:
            raise UsageError(f"ConditionerInput(mask='channel') needs an even number of "
                             f"channels, got {channels}.")
        self.channels = int(channels)
        self.mask = mask
        self.parity = int(parity)
        self.batch_norm_momentum = float(batch_norm_momentum)
        self.batch_norm_epsilon = float(batch_norm_epsilon)
        self.synchronized_batch_norm = bool(synchronized_batch_norm)
        self.norm = BatchNormalization(momentum=batch_norm_momentum, epsilon=batch_norm_epsilon,
                                       scale=False, synchronized=synchronized_batch_norm,
                                       dtype=self.dtype_policy)

    @staticmethod
    def features(channels: int, mask: str) -> int:
        """The prepared features of a coupled tensor of ``channels`` (context excluded)."""
        return 2 * channels + 1 if mask == "checkerboard" else channels

    @property
    def _normalized_channels(self) -> int:
        return self.channels if self.mask == "checkerboard" else self.channels // 2

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        self.norm.build(tuple(input_shape[:-1]) + (self._normalized_channels,))

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        extra = input_shape[-1] - self.channels
        return tuple(input_shape[:-1]) + (self.features(self.channels, self.mask) + extra,)

    def call(self, x: tf.Tensor, training: running_average.Training = False) -> tf.Tensor:
        coupled, context = x[..., :self.channels], x[..., self.channels:]
        if self.mask == "channel":
            half = self.channels // 2
            coupled = coupled[..., half:] if self.parity else coupled[..., :half]
        u = self.norm(coupled, training=training)
        if self.mask == "checkerboard":
            u = 2.0 * u
        parts = [u, -u]
        if self.mask == "checkerboard":
            height, width = x.shape[-3], x.shape[-2]
            if height is None or width is None:
                height, width = tf.shape(x)[-3], tf.shape(x)[-2]
            b = checkerboard_mask(height, width, self.parity, u.dtype)
            parts.append(tf.zeros_like(u[..., :1]) + b)  # The mask, broadcast over the batch.
        prepared = tf.nn.relu(tf.concat(parts, axis=-1))
        if x.shape[-1] == self.channels:
            return prepared
        return tf.concat([prepared, tf.cast(context, prepared.dtype)], axis=-1)

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels, "mask": self.mask,
                "parity": self.parity, "batch_norm_momentum": self.batch_norm_momentum,
                "batch_norm_epsilon": self.batch_norm_epsilon,
                "synchronized_batch_norm": self.synchronized_batch_norm}
