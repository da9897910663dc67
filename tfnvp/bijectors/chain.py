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
"""

from __future__ import annotations

import tensorflow as tf
from tensorflow_probability.python.bijectors.chain import _Chain
from tensorflow_probability.python.internal import cache_util

__all__ = ["FusedChain"]


class FusedChain(_Chain):
    """A ``tfb.Chain`` computing each direction and its log-det in one pass.

    It derives from TFP's ``_Chain``, which is what ``tfb.Chain(steps)``
    itself builds when a step is not a ``CompositeTensor`` (ours hold Keras
    layers, so they never are); that keeps the chain and any distribution
    built on it usable as ordinary Python objects inside ``tf.function``.

    Math: for ``Chain([b_1, ..., b_n])``, ``inverse = b_n^-1 o ... o b_1^-1``
    and ``log|det J_inverse(y)| = sum_k ildj_k(y_k)`` with ``y_1 = y``,
    ``y_{k+1} = b_k^-1(y_k)``; ``forward`` runs the list backwards.
    """

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    def _augmented_inverse(self, y: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        event_ndims = self.inverse_min_event_ndims
        ildj = tf.zeros([], dtype=y.dtype)
        for step in self.bijectors:
            x = step.inverse(y)
            ildj = ildj + step.inverse_log_det_jacobian(y, event_ndims=event_ndims)
            event_ndims = step.inverse_event_ndims(event_ndims)
            y = x
        return y, {"ildj": ildj, "fldj": -ildj}

    def _augmented_forward(self, x: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        event_ndims = self.forward_min_event_ndims
        fldj = tf.zeros([], dtype=x.dtype)
        for step in reversed(self.bijectors):
            y = step.forward(x)
            fldj = fldj + step.forward_log_det_jacobian(x, event_ndims=event_ndims)
            event_ndims = step.forward_event_ndims(event_ndims)
            x = y
        return x, {"fldj": fldj, "ildj": -fldj}

    def _forward(self, x: tf.Tensor) -> tf.Tensor:
        return self._augmented_forward(x)[0]

    def _inverse(self, y: tf.Tensor) -> tf.Tensor:
        return self._augmented_inverse(y)[0]

    def _inverse_log_det_jacobian(self, y, event_ndims, **kwargs):
        if kwargs or event_ndims != self.inverse_min_event_ndims:
            return super()._inverse_log_det_jacobian(y, event_ndims, **kwargs)
        attrs = self._cache.inverse_attributes(y)
        if "ildj" not in attrs:
            x = self.inverse(y)  # Fills `attrs`; `x` keeps the cache entry alive.
            del x
        return attrs["ildj"]

    def _forward_log_det_jacobian(self, x, event_ndims, **kwargs):
        if kwargs or event_ndims != self.forward_min_event_ndims:
            return super()._forward_log_det_jacobian(x, event_ndims, **kwargs)
        attrs = self._cache.forward_attributes(x)
        if "fldj" not in attrs:
            y = self.forward(x)
            del y
        return attrs["fldj"]
