"""Squeeze: 2x2 space-to-depth (Real NVP section 3.6, Figure 3).

The squeezing operation turns an ``s x s x c`` tensor into an
``s/2 x s/2 x 4c`` tensor by moving each 2x2 block of pixels into the channel
axis.  It is a permutation, so its log-det is 0.

Direction: like every tfnvp bijector, the paper's data -> latent direction is
the **inverse** (TFP's ``log_prob`` runs ``inverse``), so ``inverse``
squeezes and ``forward`` un-squeezes.

Channel orders (``order``):

* ``"space_to_depth"`` (default): ``tf.nn.space_to_depth``'s, channel
  ``(2*dy + dx)*c + k`` holds channel ``k`` of sub-pixel ``(dy, dx)``.  The
  first half of the squeezed channels (what a parity-0 channel mask keeps) is
  then the top row of every 2x2 block, ``{(0, 0), (0, 1)}``: one pixel of
  each checkerboard colour.  So the channel couplings after a squeeze split
  the variables differently from the checkerboard couplings before it; an
  order whose first half were one checkerboard colour would make them
  redundant (Figure 3).  This is the squeeze of the channel couplings.
* ``"checkerboard"``: the four sub-pixel groups of ``c`` channels come in
  the order ``(0, 1), (1, 0), (0, 0), (1, 1)``: the first half is the
  checkerboard colour ``dy + dx = 1``, the second half the colour ``dy + dx
  = 0``, which holds each block's top-left pixel.  This is the squeeze of the
  factor-out step (the authors' release's ordered squeeze): factoring out the
  first half keeps a quincunx lattice of the pixels for the coarser scales
  (eqs. 10-13), a coarser image sampled on a checkerboard rather than
  alternate rows.
* ``"channel_major"``: the authors' release's ``squeeze_2x2``, a reshape
  ``[H/2, 2, W/2, 2, c] -> [H/2, W/2, c, 2, 2]``: channel ``4k + 2*dy + dx``
  holds channel ``k`` of sub-pixel ``(dy, dx)``.  The release squeezes so
  before its channel couplings: the first half of the squeezed channels is
  every sub-pixel of the first ``c / 2`` input channels (``c`` even; for odd
  ``c`` also the top row of the middle channel's blocks), so a channel
  coupling splits the *input channels* where ``space_to_depth``'s splits each
  2x2 block's rows (for ``c = 1`` the two orders are the same).
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.base import IdentityParameterized

__all__ = ["Squeeze", "SQUEEZE_ORDERS"]

# For each sub-pixel-major order, the sub-pixel group (index 2*dy + dx in
# space_to_depth's order) found at each group position of the squeezed channels.
_GROUP_ORDERS: dict[str, tuple[int, int, int, int]] = {
    "space_to_depth": (0, 1, 2, 3),
    "checkerboard": (1, 2, 0, 3),
}
#: The channel orders of a squeeze (``Squeeze(order=...)``; module docstring).
SQUEEZE_ORDERS: tuple[str, ...] = (*_GROUP_ORDERS, "channel_major")


def _apply_rank4(fn, x: tf.Tensor) -> tf.Tensor:
    """Applies a rank-4 image op to ``[..., H, W, C]`` with any batch rank."""
    shape = tf.shape(x)
    flat = tf.reshape(x, tf.concat([[-1], shape[-3:]], axis=0))
    out = fn(flat)
    return tf.reshape(out, tf.concat([shape[:-3], tf.shape(out)[1:]], axis=0))


def _transpose_channels(t: tf.Tensor, rows: int) -> tf.Tensor:
    """Rank 4: the last axis read as a ``[rows, C / rows]`` matrix, transposed, flattened."""
    shape = tf.shape(t)
    matrix = tf.reshape(t, tf.concat([shape[:3], [rows, t.shape[-1] // rows]], axis=0))
    return tf.reshape(tf.transpose(matrix, [0, 1, 2, 4, 3]), shape)


def _permute_groups(t: tf.Tensor, groups: tuple[int, ...]) -> tf.Tensor:
    """Reorders the last axis' four equal groups: group ``k`` of the result is ``groups[k]``."""
    if groups == (0, 1, 2, 3):
        return t
    size = t.shape[-1] // 4
    return tf.concat([t[..., g * size:(g + 1) * size] for g in groups], axis=-1)


class Squeeze(IdentityParameterized, tfp.bijectors.Bijector):
    """2x2 squeeze as a bijector; ``inverse`` squeezes, ``forward`` un-squeezes.

    Math::

        inverse: [..., H, W, C]       -> [..., H/2, W/2, 4C]   (space to depth, then
                                                                 the order's permutation)
        forward: [..., H/2, W/2, 4C]  -> [..., H, W, C]        (its inverse)
        log|det J| = 0

    Call arguments (``training``, ``context``) are accepted and ignored.

    Args:
      order: channel order of the squeezed tensor, a key of ``SQUEEZE_ORDERS``
        (see the module docstring).

    Example::

        Squeeze().inverse(tf.zeros([8, 32, 32, 3])).shape  # [8, 16, 16, 12]
    """

    def __init__(self, order: str = "space_to_depth", validate_args: bool = False,
                 name: str = "squeeze"):
        parameters = dict(locals())
        if order not in SQUEEZE_ORDERS:
            raise ValueError(f"Unknown squeeze order {order!r}; choose one of "
                             f"{sorted(SQUEEZE_ORDERS)}.")
        self._order = order
        self._groups = _GROUP_ORDERS.get(order)  # None: channel-major.
        self._inverse_groups = (None if self._groups is None
                                else tuple(self._groups.index(g) for g in range(4)))
        super().__init__(forward_min_event_ndims=3, is_constant_jacobian=True,
                         validate_args=validate_args, parameters=parameters, name=name)

    @property
    def order(self) -> str:
        return self._order

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    def _forward(self, x: tf.Tensor, **kwargs) -> tf.Tensor:
        self._check_divisible(x.shape[-1], 4, "channels")
        if self._groups is None:  # Channel-major [c, 4] -> space_to_depth's [4, c].
            return _apply_rank4(
                lambda t: tf.nn.depth_to_space(_transpose_channels(t, t.shape[-1] // 4), 2), x)
        x = _permute_groups(x, self._inverse_groups)
        return _apply_rank4(lambda t: tf.nn.depth_to_space(t, 2), x)

    def _inverse(self, y: tf.Tensor, **kwargs) -> tf.Tensor:
        self._check_divisible(y.shape[-3], 2, "height")
        self._check_divisible(y.shape[-2], 2, "width")
        if self._groups is None:  # space_to_depth's [4, c] -> channel-major [c, 4].
            return _apply_rank4(lambda t: _transpose_channels(tf.nn.space_to_depth(t, 2), 4), y)
        return _permute_groups(_apply_rank4(lambda t: tf.nn.space_to_depth(t, 2), y),
                               self._groups)

    def _forward_log_det_jacobian(self, x: tf.Tensor, **kwargs) -> tf.Tensor:
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
