"""A bijector called without the conditioning context: ``WithoutContext``.

The model hands the same call arguments (``training`` and ``context``,
``tfnvp.bijectors.base``) to every bijector of its flow.  A flow in which only
some steps are conditioned on the labels (Glow's release: the top prior only)
wraps the others: ``WithoutContext(b)`` computes ``b``'s transformation and
log-det with ``context=None``, so ``b``'s conditioner is the unconditional
one it was built as, whatever context the flow receives.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.base import FusedBijector
from tfnvp.bijectors.chain import forward_and_log_det, inverse_and_log_det
from tfnvp.running_average import Training

__all__ = ["WithoutContext"]


class WithoutContext(FusedBijector):
    """``bijector`` with ``context=None`` (module docstring); the same event ranks and
    log-dets, one call of ``bijector`` per direction.

    Example::

        step = WithoutContext(coupling)
        step.inverse(y, training=False, context=one_hot)   # == coupling.inverse(y, training=False)
    """

    def __init__(self, bijector: tfp.bijectors.Bijector, name: str | None = None):
        parameters = dict(locals())
        self._bijector = bijector
        super().__init__(forward_min_event_ndims=bijector.forward_min_event_ndims,
                         inverse_min_event_ndims=bijector.inverse_min_event_ndims,
                         is_constant_jacobian=bijector.is_constant_jacobian,
                         parameters=parameters, name=name or bijector.name)

    @property
    def bijector(self) -> tfp.bijectors.Bijector:
        return self._bijector

    def _augmented_forward(self, x: tf.Tensor, training: Training = False,
                           context: tf.Tensor | None = None
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        del context
        y, fldj = forward_and_log_det(self._bijector, x, self.forward_min_event_ndims,
                                      training=training)
        return y, {"fldj": fldj, "ildj": -fldj}

    def _augmented_inverse(self, y: tf.Tensor, training: Training = False,
                           context: tf.Tensor | None = None
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        del context
        x, ildj = inverse_and_log_det(self._bijector, y, self.inverse_min_event_ndims,
                                      training=training)
        return x, {"ildj": ildj, "fldj": -ildj}
