"""Squeeze: 2x2 space-to-depth (Real NVP section 3.6, Figure 3).

The squeezing operation turns an ``s x s x c`` tensor into an
``s/2 x s/2 x 4c`` tensor by moving each 2x2 block of pixels into the channel
axis.  It is a permutation, so its log-det is 0.

Direction: like every tfnvp bijector, the paper's data -> latent direction is
the **inverse** (TFP's ``log_prob`` runs ``inverse``), so ``inverse``
squeezes and ``forward`` un-squeezes.

Channel order: ``tf.nn.space_to_depth``'s, channel ``(2*dy + dx)*c + k`` holds
channel ``k`` of sub-pixel ``(dy, dx)``.  The first half of the squeezed
channels (what a parity-0 channel mask keeps) is then the top row of every
2x2 block, ``{(0, 0), (0, 1)}``: one pixel of each checkerboard colour.  So the
channel couplings after a squeeze split the variables differently from the
checkerboard couplings before it; an order whose first half were one
checkerboard colour would make them redundant (Figure 3).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["Squeeze"]


def _apply_rank4(fn, x: tf.Tensor) -> tf.Tensor:
    """Applies a rank-4 image op to ``[..., H, W, C]`` with any batch rank."""
    shape = tf.shape(x)
    flat = tf.reshape(x, tf.concat([[-1], shape[-3:]], axis=0))
    out = fn(flat)
    return tf.reshape(out, tf.concat([shape[:-3], tf.shape(out)[1:]], axis=0))


class Squeeze(tfp.bijectors.Bijector):
    """2x2 squeeze as a bijector; ``inverse`` squeezes, ``forward`` un-squeezes.

    Math::

        inverse: [..., H, W, C]       -> [..., H/2, W/2, 4C]   (space to depth)
        forward: [..., H/2, W/2, 4C]  -> [..., H, W, C]        (depth to space)
        log|det J| = 0

    Example::

        Squeeze().inverse(tf.zeros([8, 32, 32, 3])).shape  # [8, 16, 16, 12]
    """

    def __init__(self, validate_args: bool = False, name: str = "squeeze"):
        super().__init__(forward_min_event_ndims=3, is_constant_jacobian=True,
                         validate_args=validate_args, parameters=dict(locals()), name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    def _forward(self, x: tf.Tensor) -> tf.Tensor:
        self._check_divisible(x.shape[-1], 4, "channels")
        return _apply_rank4(lambda t: tf.nn.depth_to_space(t, 2), x)

    def _inverse(self, y: tf.Tensor) -> tf.Tensor:
        self._check_divisible(y.shape[-3], 2, "height")
        self._check_divisible(y.shape[-2], 2, "width")
        return _apply_rank4(lambda t: tf.nn.space_to_depth(t, 2), y)

    def _forward_log_det_jacobian(self, x: tf.Tensor) -> tf.Tensor:
        return tf.zeros([], dtype=x.dtype)

    @staticmethod
    def _check_divisible(size: int | None, divisor: int, what: str) -> None:
        if size is not None and size % divisor:
            raise ValueError(f"Squeeze needs {what} divisible by {divisor}, got {size}.")

    def _forward_event_shape(self, input_shape: tf.TensorShape) -> tf.TensorShape:
        h, w, c = input_shape[-3:]
        return input_shape[:-3].concatenate(
            [None if h is None else 2 * h, None if w is None else 2 * w,
             None if c is None else c // 4])

    def _inverse_event_shape(self, output_shape: tf.TensorShape) -> tf.TensorShape:
        h, w, c = output_shape[-3:]
        return output_shape[:-3].concatenate(
            [None if h is None else h // 2, None if w is None else w // 2,
             None if c is None else 4 * c])

    def _forward_event_shape_tensor(self, input_shape: tf.Tensor) -> tf.Tensor:
        return tf.concat([input_shape[:-3], input_shape[-3:-1] * 2, input_shape[-1:] // 4], 0)

    def _inverse_event_shape_tensor(self, output_shape: tf.Tensor) -> tf.Tensor:
        return tf.concat([output_shape[:-3], output_shape[-3:-1] // 2, output_shape[-1:] * 4], 0)
