"""``tfb.Chain`` whose output and log-det come from one walk.

``tfb.Chain`` computes ``inverse`` and ``inverse_log_det_jacobian`` in two
separate walks over its steps.  Inside a ``tf.function`` the steps' caches
make the second walk free, but in eager mode the intermediate tensors of the
first walk are garbage-collected before the second, so every step runs twice:
twice the cost, and a batch-norm step in training mode would update its
running statistics twice.  ``FusedChain`` walks once, keeps the summed log-det
in TFP's cache next to the result (``BijectorCacheWithGreedyAttrs``), and
otherwise is a ``tfb.Chain`` (same order: ``forward`` applies the list from
last to first, ``inverse`` from first to last; same shape logic).

Call arguments: unlike ``tfb.Chain`` (whose kwargs are per-bijector dicts
keyed by name), ``FusedChain`` hands the same kwargs -- tfnvp's ``training``
and ``context``, ``tfnvp.bijectors.base`` -- to every member.
"""

from __future__ import annotations

import tensorflow as tf

from tfnvp._compat import BijectorCacheWithGreedyAttrs, Chain, IdentityParameterized

__all__ = ["FusedChain"]


class FusedChain(IdentityParameterized, Chain):
    """A ``tfb.Chain`` computing each direction and its log-det in one pass.

    It derives from the class ``tfb.Chain(steps)`` itself builds when a step
    is not a ``CompositeTensor`` (``tfnvp._compat.Chain``; ours hold Keras
    layers, so they never are); that keeps the chain and any distribution
    built on it usable as ordinary Python objects inside ``tf.function``.

    Math: for ``Chain([b_1, ..., b_n])``, ``inverse = b_n^-1 o ... o b_1^-1``
    and ``log|det J_inverse(y)| = sum_k ildj_k(y_k)`` with ``y_1 = y``,
    ``y_{k+1} = b_k^-1(y_k)``; ``forward`` runs the list backwards.
    """

    _cache = BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    def _augmented_inverse(self, y: tf.Tensor, **kwargs
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        event_ndims = self.inverse_min_event_ndims
        ildj = tf.zeros([], dtype=y.dtype)
        for step in self.bijectors:
            x = step.inverse(y, **kwargs)
            ildj = ildj + step.inverse_log_det_jacobian(y, event_ndims=event_ndims, **kwargs)
            event_ndims = step.inverse_event_ndims(event_ndims)
            y = x
        return y, {"ildj": ildj, "fldj": -ildj}

    def _augmented_forward(self, x: tf.Tensor, **kwargs
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        event_ndims = self.forward_min_event_ndims
        fldj = tf.zeros([], dtype=x.dtype)
        for step in reversed(self.bijectors):
            y = step.forward(x, **kwargs)
            fldj = fldj + step.forward_log_det_jacobian(x, event_ndims=event_ndims, **kwargs)
            event_ndims = step.forward_event_ndims(event_ndims)
            x = y
        return x, {"fldj": fldj, "ildj": -fldj}

    def _forward(self, x: tf.Tensor, **kwargs) -> tf.Tensor:
        return self._augmented_forward(x, **kwargs)[0]

    def _inverse(self, y: tf.Tensor, **kwargs) -> tf.Tensor:
        return self._augmented_inverse(y, **kwargs)[0]

    def _inverse_log_det_jacobian(self, y, event_ndims, **kwargs):
        attrs = self._cache.inverse_attributes(y, **kwargs)
        if "ildj" not in attrs:
            x = self.inverse(y, **kwargs)  # Fills `attrs`; `x` keeps the cache entry alive.
            del x
        return _sum_extra_event_axes(attrs["ildj"], event_ndims - self.inverse_min_event_ndims)

    def _forward_log_det_jacobian(self, x, event_ndims, **kwargs):
        attrs = self._cache.forward_attributes(x, **kwargs)
        if "fldj" not in attrs:
            y = self.forward(x, **kwargs)
            del y
        return _sum_extra_event_axes(attrs["fldj"], event_ndims - self.forward_min_event_ndims)


def _sum_extra_event_axes(log_det: tf.Tensor, extra: int) -> tf.Tensor:
    """Sums a per-event log-det over the ``extra`` batch axes that belong to a larger event."""
    if extra < 0:
        raise ValueError(f"event_ndims is below the chain's minimum by {-extra}.")
    return tf.reduce_sum(log_det, axis=list(range(-extra, 0))) if extra else log_det
