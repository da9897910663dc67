"""Factoring out half of the variables: the multi-scale recursion (section 3.6).

Eqs. (10)-(13) of the paper, data -> latent::

    h(0) = x
    (z(i+1), h(i+1)) = f(i+1)(h(i))
    z(L) = f(L)(h(L-1))
    z = (z(1), ..., z(L))

``FactorOut(inner)`` is one level of that recursion: of its ``[..., H, W, C]``
input, the first ``C/2`` channels leave as latent variables and the last
``C/2`` go through ``inner`` (the next, coarser scale).  The whole latent stays
one tensor of the input's shape.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.base import FusedBijector
from tfnvp.bijectors.chain import forward_and_log_det, inverse_and_log_det

__all__ = ["FactorOut"]


class FactorOut(FusedBijector):
    """Passes the first half of the channels through, transforms the rest.

    Math (``inverse`` is the paper's data -> latent direction)::

        inverse([a, b]) = [a, inner.inverse(b)]     (split on the last axis)
        forward([a, b]) = [a, inner.forward(b)]
        log|det J| = log|det J_inner(b)|

    Latent layout: with the flow built by ``tfnvp.RealNVP`` each scale ends by
    un-squeezing, so ``z`` has the image's shape and
    ``RealNVP.latent_scale_index()`` tells which scale each entry belongs to.

    Args:
      inner: bijector on ``[..., H, W, C/2]`` events (``forward_min_event_ndims``
        3, shape preserving).

    Call arguments (``training``, ``context``) are handed to ``inner``.

    Example::

        step = FactorOut(tfb.Chain([...next scale...]))
    """

    def __init__(self, inner: tfp.bijectors.Bijector, validate_args: bool = False,
                 name: str = "factor_out"):
        parameters = dict(locals())
        if inner.forward_min_event_ndims != 3:
            raise ValueError("FactorOut's inner bijector must act on [H, W, C] events "
                             f"(forward_min_event_ndims=3), got {inner.forward_min_event_ndims}.")
        self._inner = inner
        super().__init__(forward_min_event_ndims=3, validate_args=validate_args,
                         parameters=parameters, name=name)

    @property
    def inner(self) -> tfp.bijectors.Bijector:
        return self._inner

    @staticmethod
    def _split(t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        channels = t.shape[-1]
        if channels is None or channels % 2:
            raise ValueError(f"FactorOut needs a known, even number of channels, got {channels}.")
        return t[..., : channels // 2], t[..., channels // 2:]

    def _augmented_forward(self, x: tf.Tensor, **kwargs
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        kept, rest = self._split(x)
        inner, fldj = forward_and_log_det(self._inner, rest, 3, **kwargs)
        y = tf.concat([kept, inner], axis=-1)
        return y, {"fldj": fldj, "ildj": -fldj}

    def _augmented_inverse(self, y: tf.Tensor, **kwargs
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        kept, rest = self._split(y)
        inner, ildj = inverse_and_log_det(self._inner, rest, 3, **kwargs)
        x = tf.concat([kept, inner], axis=-1)
        return x, {"ildj": ildj, "fldj": -ildj}
