"""Base class of the bijectors that apply one map of the channels at every position.

Glow's actnorm and invertible 1x1 convolution (``tfnvp.bijectors.ActNorm``,
``tfnvp.bijectors.InvertibleConv1x1``) transform each of the ``H * W``
positions of an ``[..., H, W, C]`` event by the same invertible map of the
``C`` channels, so the Jacobian is block diagonal with ``H * W`` equal
blocks and::

    log|det J| = H * W * log|det J_position|          (Glow, Table 1)

the same for every example.  Their parameters live in a Keras layer owned
by the model (trained, checkpointed, exported with it), never in the
bijector.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.base import IdentityParameterized

__all__ = ["ChannelwiseBijector"]


class ChannelwiseBijector(IdentityParameterized, tfp.bijectors.Bijector):
    """A per-position map of ``channels`` channels on ``[..., H, W, C]`` events.

    Subclasses implement ``_inverse`` and ``_forward`` (accepting
    ``training=False, context=None``) and ``_position_log_det(x, training)``,
    the log-det of the data -> latent map (``inverse``) at one position; both
    log-det methods are derived here.

    Args:
      layer: the Keras layer holding the parameters.
      channels: ``C``.
      parameters: the subclass constructor's ``dict(locals())`` (TFP's convention).
    """

    def __init__(self, layer: Any, channels: int, parameters: dict, validate_args: bool,
                 name: str):
        self._layer = layer
        self._channels = int(channels)
        super().__init__(forward_min_event_ndims=3, validate_args=validate_args,
                         parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        # Parameters live in a Keras layer owned by the model.
        return {}

    def _check_channels(self, x: tf.Tensor) -> None:
        """A ``ValueError`` naming the bijector unless ``x`` is ``[..., H, W, channels]``."""
        what = type(self).__name__
        if x.shape.rank is not None and x.shape.rank < 3:
            raise ValueError(f"{what} acts on [..., H, W, C] images, got an input of shape {x.shape}.")
        if x.shape[-1] != self._channels:
            raise ValueError(f"{what} over {self._channels} channels got an input of shape "
                             f"{x.shape} (the last axis is the channel axis).")

    def _position_log_det(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        raise NotImplementedError

    def _events_log_det(self, x: tf.Tensor, training: bool) -> tf.Tensor:
        """``H * W * _position_log_det`` for every ``[H, W, C]`` event of ``x``."""
        self._check_channels(x)
        shape = tf.shape(x)
        positions = tf.cast(shape[-3] * shape[-2], x.dtype)
        return tf.fill(shape[:-3], positions * self._position_log_det(x, training))

    def _inverse_log_det_jacobian(self, x: tf.Tensor, training: bool = False,
                                  context: tf.Tensor | None = None) -> tf.Tensor:
        del context
        return self._events_log_det(x, training)

    def _forward_log_det_jacobian(self, z: tf.Tensor, training: bool = False,
                                  context: tf.Tensor | None = None) -> tf.Tensor:
        del training, context  # The latent side never initializes anything.
        return -self._events_log_det(z, False)
