"""Logit preprocessing of dequantized pixels (Real NVP section 4.1).

Pixels ``x`` in ``[0, 256)`` (8-bit values plus uniform dequantization noise)
are mapped to the real line by::

    y = logit(alpha + (1 - alpha) * x / 256),      alpha = 0.05

so that the model's density, and hence bits/dim, is reported in 8-bit pixel
space.  Per element::

    log|dy/dx| = log((1 - alpha) / 256) - log(p) - log(1 - p),   p = alpha + (1 - alpha) x / 256
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp

__all__ = ["LogitPreprocess"]


class LogitPreprocess(tfp.bijectors.Bijector):
    """Dequantized pixels <-> logit space; ``inverse`` is data -> latent.

    Math::

        inverse(x) = logit(alpha + (1 - alpha) * x / 256)
        forward(y) = 256 * (sigmoid(y) - alpha) / (1 - alpha)
        forward_log_det_jacobian(y) = log(256 / (1 - alpha)) - softplus(-y) - softplus(y)

    Args:
      alpha: the paper's alpha in ``(0, 1)``; 0.05 in section 4.1.
      num_levels: size of the pixel range, 256 for 8-bit images.
      validate_args: if True, ``inverse`` checks that pixels are finite and in
        ``[0, num_levels)``.

    Example::

        LogitPreprocess().inverse(tf.constant([0.5, 128.0, 255.5]))
    """

    def __init__(self, alpha: float = 0.05, num_levels: int = 256, validate_args: bool = False,
                 name: str = "logit_preprocess"):
        parameters = dict(locals())
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}.")
        if num_levels < 2:
            raise ValueError(f"num_levels must be at least 2, got {num_levels!r}.")
        self._alpha = float(alpha)
        self._num_levels = int(num_levels)
        super().__init__(forward_min_event_ndims=0, validate_args=validate_args,
                         parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    @property
    def alpha(self) -> float:
        return self._alpha

    def _forward(self, y: tf.Tensor) -> tf.Tensor:
        return (tf.sigmoid(y) - self._alpha) * (self._num_levels / (1.0 - self._alpha))

    def _inverse(self, x: tf.Tensor) -> tf.Tensor:
        with tf.control_dependencies(self._assertions(x)):
            p = self._alpha + (1.0 - self._alpha) / self._num_levels * x
            return tf.math.log(p) - tf.math.log1p(-p)

    def _forward_log_det_jacobian(self, y: tf.Tensor) -> tf.Tensor:
        return (math.log(self._num_levels / (1.0 - self._alpha))
                - tf.nn.softplus(-y) - tf.nn.softplus(y))

    def _inverse_log_det_jacobian(self, x: tf.Tensor) -> tf.Tensor:
        p = self._alpha + (1.0 - self._alpha) / self._num_levels * x
        return (math.log((1.0 - self._alpha) / self._num_levels)
                - tf.math.log(p) - tf.math.log1p(-p))

    def _assertions(self, x: tf.Tensor) -> list[tf.Operation]:
        if not self.validate_args:
            return []
        top = self._num_levels
        return [
            tf.debugging.assert_all_finite(x, message="pixel values contain NaN or Inf"),
            tf.debugging.assert_greater_equal(
                x, tf.zeros([], x.dtype), message=f"pixel values must lie in [0, {top}): found a negative value"),
            tf.debugging.assert_less(
                x, tf.constant(top, x.dtype), message=f"pixel values must lie in [0, {top}): found a value >= {top}"),
        ]
