"""Logit preprocessing of dequantized pixels (Real NVP section 4.1).

Pixels ``x`` in ``[0, 256)`` (8-bit values plus uniform dequantization noise)
are mapped to the real line by ``y = logit(p)`` with, for ``alpha = 0.05``::

    symmetric (default):  p = alpha + (1 - 2 alpha) x / 256     p in [alpha, 1 - alpha)
    asymmetric:           p = alpha + (1 - alpha) x / 256       p in [alpha, 1)

Section 4.1 writes the asymmetric form; the authors' release uses the
symmetric one.  The asymmetric map is unbounded at the top: pixels near 256
reach ``p -> 1`` and a saturated pixel (255 + noise) is spread over
``(logit(1 - 0.95/256), +inf)``, a much wider (costlier) interval under a
Gaussian-like density than the symmetric map's ``(logit(1 - alpha -
0.9/256), logit(1 - alpha))``, which mirrors the bottom of the range.

The density, hence bits/dim, stays in 8-bit pixel space through the exact
log-det.  Per element, with ``a = 1 - 2 alpha`` (symmetric) or ``1 - alpha``::

    log|dy/dx| = log(a / 256) - log(p) - log(1 - p)
"""

from __future__ import annotations

import math

import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.base import IdentityParameterized

__all__ = ["LogitPreprocess"]


class LogitPreprocess(IdentityParameterized, tfp.bijectors.Bijector):
    """Dequantized pixels <-> logit space; ``inverse`` is data -> latent.

    Math (``a = 1 - 2 alpha`` if ``symmetric`` else ``1 - alpha``, ``N = num_levels``)::

        inverse(x) = logit(alpha + a * x / N)
        forward(y) = N * (sigmoid(y) - alpha) / a
        forward_log_det_jacobian(y) = log(N / a) - softplus(-y) - softplus(y)

    Args:
      alpha: the paper's alpha, 0.05 in section 4.1; in ``(0, 1/2)`` when
        ``symmetric``, else in ``(0, 1)``.
      symmetric: the release's map (both ends ``alpha`` away from 0 and 1);
        False: the formula as printed in section 4.1.
      num_levels: size of the pixel range, 256 for 8-bit images.
      validate_args: if True, ``inverse`` checks that pixels are finite and in
        ``[0, num_levels)``.

    Call arguments (``training``, ``context``; ``tfnvp.bijectors.base``) are
    accepted and ignored.

    Example::

        LogitPreprocess().inverse(tf.constant([0.5, 128.0, 255.5]))
    """

    def __init__(self, alpha: float = 0.05, symmetric: bool = True, num_levels: int = 256,
                 validate_args: bool = False, name: str = "logit_preprocess"):
        parameters = dict(locals())
        upper = 0.5 if symmetric else 1.0
        if not 0.0 < alpha < upper:
            raise ValueError(f"alpha must lie in (0, {upper}) for the "
                             f"{'symmetric' if symmetric else 'asymmetric'} map, got {alpha!r}.")
        if num_levels < 2:
            raise ValueError(f"num_levels must be at least 2, got {num_levels!r}.")
        self._alpha = float(alpha)
        self._symmetric = bool(symmetric)
        self._num_levels = int(num_levels)
        # Width of the p interval the pixels map to.
        self._width = 1.0 - (2.0 if symmetric else 1.0) * self._alpha
        super().__init__(forward_min_event_ndims=0, validate_args=validate_args,
                         parameters=parameters, name=name)

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}

    @property
    def alpha(self) -> float:
        return self._alpha

    @property
    def symmetric(self) -> bool:
        return self._symmetric

    def _p(self, x: tf.Tensor) -> tf.Tensor:
        return self._alpha + self._width / self._num_levels * x

    def _forward(self, y: tf.Tensor, **kwargs) -> tf.Tensor:
        return (tf.sigmoid(y) - self._alpha) * (self._num_levels / self._width)

    def _inverse(self, x: tf.Tensor, **kwargs) -> tf.Tensor:
        with tf.control_dependencies(self._assertions(x)):
            p = self._p(x)
            return tf.math.log(p) - tf.math.log1p(-p)

    def _forward_log_det_jacobian(self, y: tf.Tensor, **kwargs) -> tf.Tensor:
        return (math.log(self._num_levels / self._width)
                - tf.nn.softplus(-y) - tf.nn.softplus(y))

    def _inverse_log_det_jacobian(self, x: tf.Tensor, **kwargs) -> tf.Tensor:
        p = self._p(x)
        return math.log(self._width / self._num_levels) - tf.math.log(p) - tf.math.log1p(-p)

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
