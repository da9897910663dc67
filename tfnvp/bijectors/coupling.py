"""Affine coupling layer (Real NVP, section 3.3, eqs. 7-9).

The paper's coupling maps data-side ``x`` to latent-side ``y``::

    y = b * x + (1 - b) * (x * exp(s(b * x)) + t(b * x))           (eq. 9)
    log|det dy/dx| = sum_i ((1 - b) * s(b * x))_i                     (eq. 6)

where ``b`` is a binary mask (section 3.4).  In TensorFlow Probability's
convention a bijector's ``forward`` maps latent to data (sampling) and
``log_prob`` runs ``inverse``, so the paper's map above is this bijector's
**inverse**, and ``forward`` is its inverse, eq. (8)::

    x = b * y + (1 - b) * ((y - t(b * y)) * exp(-s(b * y)))

Both directions read the conditioner only at ``b * input``, which the
coupling leaves unchanged; that is what makes the inverse exact and the
Jacobian triangular.

``MaskedCoupling`` holds what every coupling shares (masks, parity, the
conditioner call on any batch shape); ``AffineCoupling`` is the affine one
above, ``AdditiveCoupling`` its special case ``s = 0`` (NICE's additive
coupling, Glow's ``coupling="additive"``), ``tfnvp.bijectors.LogisticMixtureCoupling``
Flow++'s.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from tfnvp.bijectors.base import FusedBijector
from tfnvp.running_average import Training

__all__ = ["AdditiveCoupling", "AffineCoupling", "MaskedCoupling", "checkerboard_mask",
           "channel_mask", "MASK_TYPES"]

MASK_TYPES = ("checkerboard", "channel")


def checkerboard_mask(height: int | tf.Tensor, width: int | tf.Tensor, parity: int,
                      dtype: tf.DType) -> tf.Tensor:
    """Spatial checkerboard mask of shape ``[height, width, 1]`` (section 3.4).

    With ``parity=0`` the mask is 1 where the sum of the spatial coordinates
    ``i + j`` is odd, with ``parity=1`` it is the complement.
    """
    if isinstance(height, int) and isinstance(width, int):  # Static: one constant.
        odd = np.add.outer(np.arange(height), np.arange(width)) % 2
        return tf.constant((odd if parity == 0 else 1 - odd)[:, :, None], dtype=dtype)
    rows = tf.range(height)[:, None]
    cols = tf.range(width)[None, :]
    odd = tf.math.floormod(rows + cols, 2)
    mask = odd if parity == 0 else 1 - odd
    return tf.cast(mask, dtype)[:, :, None]


def channel_mask(channels: int, parity: int, dtype: tf.DType) -> tf.Tensor:
    """Channel mask of shape ``[channels]`` (section 3.4).

    With ``parity=0`` the first half of the channels is 1 (kept), with
    ``parity=1`` the second half.
    """
    if channels % 2:
        raise ValueError(f"A channel mask needs an even number of channels, got {channels}.")
    first = np.concatenate([np.ones(channels // 2), np.zeros(channels // 2)])
    return tf.constant(first if parity == 0 else 1.0 - first, dtype=dtype)


class MaskedCoupling(FusedBijector):
    """What every coupling shares: the mask ``b``, its parity, the conditioner call.

    A coupling leaves the entries where ``b = 1`` unchanged and transforms
    the others elementwise with parameters that the conditioner computes from
    ``b * input`` (section 3.3).  Subclasses implement the two directions
    (``_augmented_forward`` / ``_augmented_inverse``) with ``mask``,
    ``_conditioner_outputs`` and ``_sum_event``.

    Args:
      conditioner: a callable Keras layer mapping ``b * x``, ``training=`` and
        ``context=`` to a tuple of parameter tensors (leading axes those of
        ``x``).  The caller owns it (a ``keras.Model``) so that its variables
        are tracked.
      mask: ``'checkerboard'`` (needs ``event_ndims=3``), ``'channel'``
        (first half of the last axis), or an explicit 0/1 array over the last
        axis (used by the dense flow: a random half of the coordinates).
      parity: 0 for the mask, 1 for its complement.
      event_ndims: rank of one event: 3 for images ``[H, W, C]``, 1 for
        vectors.
      name: defaults to the subclass's ``default_name``.
    """

    default_name = "coupling"

    def __init__(self, conditioner: Any, mask: str | np.ndarray = "checkerboard",
                 parity: int = 0, event_ndims: int = 3, validate_args: bool = False,
                 name: str | None = None):
        parameters = dict(locals())
        if parity not in (0, 1):
            raise ValueError(f"parity must be 0 or 1, got {parity!r}.")
        if isinstance(mask, str):
            if mask not in MASK_TYPES:
                raise ValueError(f"mask must be one of {MASK_TYPES} or a 0/1 array, got {mask!r}.")
            if mask == "checkerboard" and event_ndims != 3:
                raise ValueError("The checkerboard mask needs image events (event_ndims=3), "
                                 f"got event_ndims={event_ndims}.")
        else:
            mask = np.asarray(mask)
            if mask.ndim != 1 or not np.all((mask == 0) | (mask == 1)):
                raise ValueError("An explicit mask must be a 1-D array of zeros and ones.")
        self._conditioner = conditioner
        self._mask_spec = mask
        self._parity = parity
        super().__init__(forward_min_event_ndims=event_ndims, validate_args=validate_args,
                         parameters=parameters, name=name or self.default_name)

    @property
    def conditioner(self) -> Any:
        return self._conditioner

    @property
    def parity(self) -> int:
        """The entries that pass unchanged are the mask's 1-entries (0) or its 0-entries (1)."""
        return self._parity

    def mask(self, x: tf.Tensor) -> tf.Tensor:
        """The mask ``b`` (1 = unchanged), broadcastable against ``x``."""
        if isinstance(self._mask_spec, str) and self._mask_spec == "checkerboard":
            height, width = x.shape[-3], x.shape[-2]
            if height is None or width is None:
                shape = tf.shape(x)
                height, width = shape[-3], shape[-2]
            return checkerboard_mask(height, width, self._parity, x.dtype)
        if isinstance(self._mask_spec, str):
            return channel_mask(x.shape[-1], self._parity, x.dtype)
        explicit = tf.constant(self._mask_spec, dtype=x.dtype)
        return explicit if self._parity == 0 else 1.0 - explicit

    def _conditioner_outputs(self, unchanged: tf.Tensor, training: Training,
                             context: tf.Tensor | None) -> tuple[tf.Tensor, ...]:
        """The conditioner on inputs of any batch shape.

        Convolutions and dense layers take exactly one batch axis (a single
        unbatched event, e.g. ``distribution.sample()``, or several batch axes
        would reach them with the wrong rank), so other batch shapes are
        flattened to one axis (the ``context``, ``[batch..., K]``, broadcast
        to the batch shape and flattened alike) and restored afterwards.
        """
        event_ndims = self.forward_min_event_ndims
        rank = unchanged.shape.rank
        if rank == event_ndims + 1:
            return self._conditioner(unchanged, training=training, context=context)
        shape = tf.shape(unchanged)
        batch_shape, event_shape = shape[:rank - event_ndims], shape[rank - event_ndims:]
        flat = tf.reshape(unchanged, tf.concat([[-1], event_shape], 0))
        if context is not None:
            context = tf.broadcast_to(context, tf.concat([batch_shape, tf.shape(context)[-1:]], 0))
            context = tf.reshape(context, [-1, context.shape[-1]])
        outputs = self._conditioner(flat, training=training, context=context)
        return tuple(tf.reshape(t, tf.concat([batch_shape, tf.shape(t)[1:]], 0)) for t in outputs)

    def _sum_event(self, value: tf.Tensor) -> tf.Tensor:
        """Sum over one event's axes."""
        return tf.reduce_sum(value, axis=list(range(-self.forward_min_event_ndims, 0)))


class AffineCoupling(MaskedCoupling):
    """Real NVP affine coupling bijector.

    Math (data ``x`` -> latent ``y`` is ``inverse``; see the module docstring)::

        inverse(x) = b*x + (1-b)*(x*exp(s(b*x)) + t(b*x))        eq. (9)
        forward(y) = b*y + (1-b)*(y - t(b*y))*exp(-s(b*y))        eq. (8)
        inverse_log_det_jacobian(x) = sum((1-b)*s(b*x))           eq. (6)

    The conditioner is called once per ``forward``/``inverse`` call: the
    log-det is computed together with the output and stored in TFP's bijector
    cache, so ``TransformedDistribution.log_prob`` evaluates each coupling
    network exactly once.

    Args (and ``mask``, ``parity``, ``event_ndims`` as in ``MaskedCoupling``):
      conditioner: normally a ``tfnvp.nets.ShiftAndLogScale`` mapping ``b * x``,
        ``training=`` and ``context=`` to ``(shift, log_scale)`` of the shape
        of ``x``.

    Call arguments (``tfnvp.bijectors.base``): ``training`` and ``context``
    are handed to the conditioner.

    Example::

        net = tfnvp.nets.ShiftAndLogScale(tfnvp.nets.ResNet(...), channels=3)
        coupling = AffineCoupling(net, mask="checkerboard", parity=0)
        y = coupling.inverse(x, training=True)     # data -> latent
        ildj = coupling.inverse_log_det_jacobian(x, event_ndims=3, training=True)
    """

    default_name = "affine_coupling"

    def _shift_and_log_scale(self, unchanged: tf.Tensor, mask: tf.Tensor, training: Training,
                             context: tf.Tensor | None) -> tuple[tf.Tensor, tf.Tensor]:
        shift, log_scale = self._conditioner_outputs(unchanged, training, context)
        free = 1.0 - mask
        return (tf.cast(shift, unchanged.dtype) * free,
                tf.cast(log_scale, unchanged.dtype) * free)

    def _augmented_inverse(self, x: tf.Tensor, training: Training = False,
                           context: tf.Tensor | None = None
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        mask = self.mask(x)
        unchanged = x * mask
        shift, log_scale = self._shift_and_log_scale(unchanged, mask, training, context)
        y = unchanged + (1.0 - mask) * (x * tf.exp(log_scale) + shift)
        ildj = self._sum_event(log_scale)
        return y, {"ildj": ildj, "fldj": -ildj}

    def _augmented_forward(self, y: tf.Tensor, training: Training = False,
                           context: tf.Tensor | None = None
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        mask = self.mask(y)
        unchanged = y * mask
        shift, log_scale = self._shift_and_log_scale(unchanged, mask, training, context)
        x = unchanged + (1.0 - mask) * (y - shift) * tf.exp(-log_scale)
        fldj = -self._sum_event(log_scale)
        return x, {"fldj": fldj, "ildj": -fldj}


class AdditiveCoupling(MaskedCoupling):
    """Additive coupling: NICE's (Dinh, Krueger & Bengio 2015, eq. 5), Glow's
    ``flow_coupling=0`` (Kingma & Dhariwal 2018, section 3.3).

    Math (data ``x`` -> latent ``y`` is ``inverse``, as for ``AffineCoupling``)::

        inverse(x) = b*x + (1-b)*(x + t(b*x))
        forward(y) = b*y + (1-b)*(y - t(b*y))
        log|det dy/dx| = 0                                  (volume-preserving)

    ``AffineCoupling`` with ``s = 0``, without computing a scale: the
    conditioner gives only the shift, and both log-dets are exactly 0.

    Args (and ``mask``, ``parity``, ``event_ndims`` as in ``MaskedCoupling``):
      conditioner: a layer mapping ``b * x``, ``training=`` and ``context=`` to a
        1-tuple ``(shift,)`` of the shape of ``x`` (e.g. ``tfnvp.nets.GlowAdditiveHead``).
    """

    default_name = "additive_coupling"

    def _shift(self, unchanged: tf.Tensor, mask: tf.Tensor, training: Training,
               context: tf.Tensor | None) -> tf.Tensor:
        (shift,) = self._conditioner_outputs(unchanged, training, context)
        return tf.cast(shift, unchanged.dtype) * (1.0 - mask)

    def _zero_log_det(self, x: tf.Tensor) -> tf.Tensor:
        """Exactly 0 for each event of ``x`` (the batch shape)."""
        return tf.zeros(tf.shape(x)[:x.shape.rank - self.forward_min_event_ndims], x.dtype)

    def _augmented_inverse(self, x: tf.Tensor, training: Training = False,
                           context: tf.Tensor | None = None
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        mask = self.mask(x)
        unchanged = x * mask
        y = unchanged + (1.0 - mask) * x + self._shift(unchanged, mask, training, context)
        zero = self._zero_log_det(x)
        return y, {"ildj": zero, "fldj": zero}

    def _augmented_forward(self, y: tf.Tensor, training: Training = False,
                           context: tf.Tensor | None = None
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        mask = self.mask(y)
        unchanged = y * mask
        x = unchanged + (1.0 - mask) * y - self._shift(unchanged, mask, training, context)
        zero = self._zero_log_det(y)
        return x, {"fldj": zero, "ildj": zero}
