"""Base class for bijectors with fused log-dets, and the mode/context call arguments.

Two of Real NVP's steps behave differently in training and evaluation: the
coupling layers (their conditioners contain batch normalization) and the
batch-normalization bijector itself (batch statistics vs. running averages,
paper section 3.7 and appendix E).  Both also produce their log-det as a
by-product of the transformation, so computing it separately would evaluate
the conditioner twice.

Modes and conditions are **call arguments**, never bijector state: every
tfnvp bijector accepts TFP bijector kwargs ::

    b.forward(x, training=False, context=None)
    b.inverse(y, training=..., context=...)
    b.inverse_log_det_jacobian(y, event_ndims, training=..., context=...)

``training`` is ``False`` (evaluation: running statistics), ``True``
(training: batch statistics, running averages updated) or
``tfnvp.running_average.RECALIBRATE`` (training with cumulative averages, see
``FlowModel.recalibrate``); ``context`` is an optional per-example
conditioning tensor (e.g. one-hot class labels ``[batch, K]``) handed to every
conditioner.  Bijectors that use neither accept and ignore them.  TFP's
bijector cache keys its entries on these kwargs, so a result computed in one
mode (or for one context) is never returned for another.

``FusedBijector`` subclasses implement ``_augmented_forward(x, training,
context) -> (y, {"fldj", "ildj"})`` and ``_augmented_inverse``; TFP's
``BijectorCacheWithGreedyAttrs`` stores the log-dets next to the result, so
``inverse`` followed by ``inverse_log_det_jacobian`` (same kwargs) runs the
computation once.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp._compat import BijectorCacheWithGreedyAttrs, IdentityParameterized
from tfnvp.running_average import Training

__all__ = ["FusedBijector", "IdentityParameterized"]


class FusedBijector(IdentityParameterized, tfp.bijectors.Bijector):
    """A bijector whose log-det is computed together with its output.

    Subclasses implement ``_augmented_forward`` and ``_augmented_inverse``
    (keyword arguments ``training`` and ``context``, see the module
    docstring); ``_forward``, ``_inverse`` and both log-det methods are
    derived here.
    """

    _cache = BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        # Parameters live in Keras layers owned by the model, not in the
        # bijector, so the bijector has no batch shape of its own.
        return {}

    def _augmented_forward(self, x: tf.Tensor, training: Training = False,
                           context: tf.Tensor | None = None
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        raise NotImplementedError

    def _augmented_inverse(self, y: tf.Tensor, training: Training = False,
                           context: tf.Tensor | None = None
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        raise NotImplementedError

    def _forward(self, x: tf.Tensor, **kwargs) -> tf.Tensor:
        return self._augmented_forward(x, **kwargs)[0]

    def _inverse(self, y: tf.Tensor, **kwargs) -> tf.Tensor:
        return self._augmented_inverse(y, **kwargs)[0]

    def _forward_log_det_jacobian(self, x: tf.Tensor, **kwargs) -> tf.Tensor:
        attrs = self._cache.forward_attributes(x, **kwargs)
        if "fldj" not in attrs:
            self.forward(x, **kwargs)  # The greedy cache fills `attrs` on the way.
        return attrs["fldj"]

    def _inverse_log_det_jacobian(self, y: tf.Tensor, **kwargs) -> tf.Tensor:
        attrs = self._cache.inverse_attributes(y, **kwargs)
        if "ildj" not in attrs:
            self.inverse(y, **kwargs)
        return attrs["ildj"]
