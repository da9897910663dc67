"""Base classes for bijectors with fused log-dets and a training/evaluation mode.

Two of Real NVP's steps behave differently in training and evaluation: the
coupling layers (their conditioners contain batch normalization) and the
batch-normalization bijector itself (batch statistics vs. running averages,
paper section 3.7 and appendix E).  Both also produce their log-det as a
by-product of the transformation, so computing it separately would evaluate
the conditioner twice.

``FusedBijector`` and ``ModalBijector`` handle both concerns once:

* subclasses implement ``_augmented_forward(x) -> (y, {"fldj", "ildj"})`` and
  ``_augmented_inverse(y) -> (x, {"ildj", "fldj"})``; TFP's
  ``BijectorCacheWithGreedyAttrs`` stores the log-dets next to the result, so
  ``inverse`` followed by ``inverse_log_det_jacobian`` runs the computation
  once;
* ``training`` is an explicit, mutable mode.  Setting it clears this
  bijector's cache, so a result computed in one mode is never returned in the
  other.  The mode is a Python value: inside a ``tf.function`` it is read
  when the function is traced, like ``keras.Layer.trainable``.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow_probability.python.internal import cache_util

__all__ = ["FusedBijector", "ModalBijector"]


class FusedBijector(tfp.bijectors.Bijector):
    """A bijector whose log-det is computed together with its output.

    Subclasses implement ``_augmented_forward`` and ``_augmented_inverse``;
    ``_forward``, ``_inverse`` and both log-det methods are derived here.
    """

    _cache = cache_util.BijectorCacheWithGreedyAttrs(
        forward_name="_augmented_forward", inverse_name="_augmented_inverse")

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        # Parameters live in Keras layers owned by the model, not in the
        # bijector, so the bijector has no batch shape of its own.
        return {}

    def _augmented_forward(self, x: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        raise NotImplementedError

    def _augmented_inverse(self, y: tf.Tensor) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        raise NotImplementedError

    def _forward(self, x: tf.Tensor) -> tf.Tensor:
        return self._augmented_forward(x)[0]

    def _inverse(self, y: tf.Tensor) -> tf.Tensor:
        return self._augmented_inverse(y)[0]

    def _forward_log_det_jacobian(self, x: tf.Tensor) -> tf.Tensor:
        attrs = self._cache.forward_attributes(x)
        if "fldj" not in attrs:
            self.forward(x)  # The greedy cache fills `attrs` on the way.
        return attrs["fldj"]

    def _inverse_log_det_jacobian(self, y: tf.Tensor) -> tf.Tensor:
        attrs = self._cache.inverse_attributes(y)
        if "ildj" not in attrs:
            self.inverse(y)
        return attrs["ildj"]


class ModalBijector(FusedBijector):
    """A fused bijector with an explicit, mutable ``training`` mode."""

    def __init__(self, *, training: bool = False, **kwargs):
        self._training = bool(training)
        super().__init__(**kwargs)

    @property
    def training(self) -> bool:
        """Whether the bijector is in training mode (batch statistics)."""
        return self._training

    @training.setter
    def training(self, value: bool) -> None:
        value = bool(value)
        if value != self._training:
            self._training = value
            self._cache.clear()
