"""Shared pieces of the bijectors that act alike at every spatial position.

Glow's actnorm and invertible 1x1 convolution (``tfnvp.bijectors.ActNorm``,
``tfnvp.bijectors.InvertibleConv1x1``) apply one per-channel map at each of
the ``H * W`` positions of an ``[..., H, W, C]`` event, so their log-det is
``H * W`` times that map's log-det, the same for every example.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["check_channels", "per_position_log_det"]


def check_channels(x: tf.Tensor, channels: int, what: str) -> None:
    """Raises a ``ValueError`` naming ``what`` unless ``x``'s last axis is ``channels``."""
    if x.shape.rank is not None and x.shape.rank < 3:
        raise ValueError(f"{what} acts on [..., H, W, C] images, got an input of shape {x.shape}.")
    if x.shape[-1] != channels:
        raise ValueError(f"{what} over {channels} channels got an input of shape {x.shape} "
                         "(the last axis is the channel axis).")


def per_position_log_det(x: tf.Tensor, log_det: tf.Tensor) -> tf.Tensor:
    """``H * W * log_det`` for every ``[H, W, C]`` event of ``x`` (batch-shaped)."""
    shape = tf.shape(x)
    positions = tf.cast(shape[-3] * shape[-2], x.dtype)
    return tf.fill(shape[:-3], positions * log_det)
