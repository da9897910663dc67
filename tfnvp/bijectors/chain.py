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
import tensorflow_probability as tfp

from tfnvp._compat import BijectorCacheWithGreedyAttrs, Chain, IdentityParameterized
from tfnvp.bijectors.base import FusedBijector

__all__ = ["FusedChain", "forward_and_log_det", "inverse_and_log_det"]


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
            x, step_ildj = inverse_and_log_det(step, y, event_ndims, **kwargs)
            ildj = ildj + step_ildj
            event_ndims = step.inverse_event_ndims(event_ndims)
            y = x
        return y, {"ildj": ildj, "fldj": -ildj}

    def _augmented_forward(self, x: tf.Tensor, **kwargs
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        event_ndims = self.forward_min_event_ndims
        fldj = tf.zeros([], dtype=x.dtype)
        for step in reversed(self.bijectors):
            y, step_fldj = forward_and_log_det(step, x, event_ndims, **kwargs)
            fldj = fldj + step_fldj
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


def _fused(bijector: tfp.bijectors.Bijector, event_ndims: int) -> bool:
    """Whether ``bijector`` computes its output and log-det in one call
    (``_augmented_*``) for events of rank ``event_ndims``, its own."""
    return (isinstance(bijector, (FusedBijector, FusedChain))
            and event_ndims == bijector.forward_min_event_ndims)


def inverse_and_log_det(bijector: tfp.bijectors.Bijector, y: tf.Tensor, event_ndims: int,
                        **kwargs) -> tuple[tf.Tensor, tf.Tensor]:
    """``(bijector.inverse(y), bijector.inverse_log_det_jacobian(y, event_ndims))``.

    For a tfnvp bijector with fused log-dets at its own event rank, one call of
    its ``_augmented_inverse``: the same operations on the same values, without
    TFP's public-method plumbing around each step (name scopes, cache lookups
    and the log-det's reduction-shape computations: about 40 graph operations
    per step that a traced flow created and Grappler then pruned, issue 27).
    The step's own result cache is not filled; the chain's is.  Any other
    bijector goes through its public methods.
    """
    if _fused(bijector, event_ndims):
        x, attrs = bijector._augmented_inverse(y, **kwargs)
        return x, attrs["ildj"]
    return (bijector.inverse(y, **kwargs),
            bijector.inverse_log_det_jacobian(y, event_ndims=event_ndims, **kwargs))


def forward_and_log_det(bijector: tfp.bijectors.Bijector, x: tf.Tensor, event_ndims: int,
                        **kwargs) -> tuple[tf.Tensor, tf.Tensor]:
    """``(bijector.forward(x), bijector.forward_log_det_jacobian(x, event_ndims))``;
    as ``inverse_and_log_det``."""
    if _fused(bijector, event_ndims):
        y, attrs = bijector._augmented_forward(x, **kwargs)
        return y, attrs["fldj"]
    return (bijector.forward(x, **kwargs),
            bijector.forward_log_det_jacobian(x, event_ndims=event_ndims, **kwargs))


def _sum_extra_event_axes(log_det: tf.Tensor, extra: int) -> tf.Tensor:
    """Sums a per-event log-det over the ``extra`` batch axes that belong to a larger event."""
    if extra < 0:
        raise ValueError(f"event_ndims is below the chain's minimum by {-extra}.")
    return tf.reduce_sum(log_det, axis=list(range(-extra, 0))) if extra else log_det
