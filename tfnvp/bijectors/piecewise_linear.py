"""Elementwise increasing piecewise-linear bijector (a 1-D normalizing flow).

Real NVP (Dinh, Sohl-Dickstein & Bengio, ICLR 2017, §3.1) trains a bijection
``f`` from data ``x`` to latent ``z`` by maximum likelihood through the
change-of-variable formula ``log p_X(x) = log p_Z(f(x)) + log |det df/dx|``.
This module provides the simplest such ``f`` for scalar data, the
piecewise-linear map of the lecture formulation, together with a Keras 3 layer
that owns its parameters (the 1-D density model built on it is
``tfnvp.models.piecewise_linear_flow.PiecewiseLinearFlow``).
"""

from __future__ import annotations

import math
from typing import Any

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.base import IdentityParameterized

tfb = tfp.bijectors

__all__ = ["PiecewiseLinear", "PiecewiseLinearParams"]

# Initial latent image of [x_min, x_max] used by `PiecewiseLinearParams`:
# the interval [-3, 3] covers +-3 standard deviations of the Normal base.
_INITIAL_LATENT_HALF_WIDTH = 3.0


@keras.saving.register_keras_serializable(package="tfnvp")
class PiecewiseLinearParams(keras.layers.Layer):
    """Keras 3 layer owning the parameters (α, ξ₁…ξ_Q) of `PiecewiseLinear`.

    TFP bijectors are ``tf.Module``s, whose ``trainable_variables`` do not see
    Keras 3 variables. Keeping α and ξ in this layer lets any ``keras.Model``
    that holds it (e.g. `PiecewiseLinearFlow`) report, save and train them.
    The layer is never called; the bijector reads ``alpha`` and ``xi``.

    The default initialization makes the initial map the affine bijection of
    ``[x_min, x_max]`` onto ``[-3, 3]``: α = −3, ξ_k = log(6 / Q).

    Args:
      num_bins: number of bins Q >= 1.
      alpha_initializer: Keras initializer for the scalar offset α.
      xi_initializer: Keras initializer for the log bin heights ξ, shape [Q].
      **kwargs: forwarded to `keras.layers.Layer` (e.g. ``dtype``, ``name``).

    Example:
      >>> params = PiecewiseLinearParams(num_bins=8)
      >>> bijector = PiecewiseLinear(8, x_min=-4.0, x_max=4.0, params=params)
    """

    def __init__(
        self,
        num_bins: int,
        alpha_initializer: Any = None,
        xi_initializer: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        _check_num_bins(num_bins)
        self.num_bins = num_bins
        if alpha_initializer is None:
            alpha_initializer = keras.initializers.Constant(-_INITIAL_LATENT_HALF_WIDTH)
        if xi_initializer is None:
            xi_initializer = keras.initializers.Constant(
                math.log(2.0 * _INITIAL_LATENT_HALF_WIDTH / num_bins)
            )
        self.alpha_initializer = keras.initializers.get(alpha_initializer)
        self.xi_initializer = keras.initializers.get(xi_initializer)
        self.alpha = self.add_weight(shape=(), initializer=self.alpha_initializer, name="alpha")
        self.xi = self.add_weight(shape=(num_bins,), initializer=self.xi_initializer, name="xi")
        self.built = True

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_bins": self.num_bins,
                "alpha_initializer": keras.initializers.serialize(self.alpha_initializer),
                "xi_initializer": keras.initializers.serialize(self.xi_initializer)}


class PiecewiseLinear(IdentityParameterized, tfb.Bijector):
    """Increasing piecewise-linear bijection of the real line (elementwise).

    Math. Split ``[x_min, x_max]`` into Q bins of width ``w = (x_max - x_min)/Q``
    with edges ``e_k = x_min + k w``. The knots (bin heights at the edges) are

        y_0 = α,    y_k = α + Σ_{j<=k} exp(ξ_j),    k = 1..Q,

    so bin k (1-based) has slope ``s_k = exp(ξ_k) / w > 0``. The data->latent
    ("Gaussianizing") map of the paper is

        f(x) = y_{k-1} + s_k (x - e_{k-1})    for x in bin k,

    and, since s_k > 0, f is increasing with exact inverse
    ``f⁻¹(z) = e_{k-1} + (z - y_{k-1}) / s_k`` for z in [y_{k-1}, y_k].
    Outside ``[x_min, x_max]`` (equivalently outside ``[y_0, y_Q]``) both maps
    continue linearly with the slope of the nearest end bin (s_1 below,
    s_Q above), so f is a bijection of the whole real line.

    Direction convention (TFP): ``forward`` maps latent to data (sampling) and
    ``log_prob(x)`` of a `tfd.TransformedDistribution` runs ``inverse``. Hence

        inverse(x) = f(x),                 forward(z) = f⁻¹(z),
        inverse_log_det_jacobian(x) = log s_{k(x)} = ξ_{k(x)} - log w,
        forward_log_det_jacobian(z) = -log s_{k(z)},

    where k(x) is the bin of x (clipped to 1..Q) and k(z) the bin of z
    between consecutive knots (clipped likewise). All four are analytic.

    Args:
      num_bins: number of bins Q >= 1.
      x_min: lower end of the binned data interval.
      x_max: upper end of the binned data interval, ``x_max > x_min``.
      params: either a `PiecewiseLinearParams` layer (recommended for training:
        its variables are visible to a `keras.Model` holding the layer) or a
        pair ``(alpha, xi)`` of tensor-likes with shapes ``[]`` and ``[Q]``
        (e.g. ``tf.Variable``s; they are read on every call, never copied).
        The bijector's dtype is the dtype of ``xi``.
      validate_args: if True, inputs containing NaN raise
        ``tf.errors.InvalidArgumentError``.
      name: name of the bijector.

    Call arguments (``training``, ``context``; ``tfnvp.bijectors.base``) are
    accepted and ignored.

    Caching: like every TFP bijector, results are cached per input tensor
    object, and the cache does not see α, ξ change. In eager mode, after a
    weight update evaluate on a new tensor (as `PiecewiseLinearFlow.log_prob`
    does), not on a tensor already passed through the bijector.

    Example:
      >>> params = PiecewiseLinearParams(num_bins=16)
      >>> flow = tfd.TransformedDistribution(
      ...     tfd.Normal(0.0, 1.0), PiecewiseLinear(16, -4.0, 4.0, params))
      >>> nll = -tf.reduce_mean(flow.log_prob(x))  # trainable: params.trainable_weights
    """

    def __init__(
        self,
        num_bins: int,
        x_min: float,
        x_max: float,
        params: PiecewiseLinearParams | tuple[Any, Any],
        validate_args: bool = False,
        name: str = "piecewise_linear",
    ) -> None:
        parameters = dict(locals())
        _check_num_bins(num_bins)
        if not (math.isfinite(x_min) and math.isfinite(x_max) and x_min < x_max):
            raise ValueError(
                f"`x_min` must be < `x_max` (both finite); got x_min={x_min}, x_max={x_max}."
            )
        if isinstance(params, PiecewiseLinearParams):
            alpha, xi = params.alpha, params.xi
        else:
            alpha, xi = params
        xi_value = tf.convert_to_tensor(xi)
        if tuple(xi_value.shape) != (num_bins,):
            raise ValueError(
                f"`params` xi must have shape [num_bins] = [{num_bins}]; got {xi_value.shape}."
            )
        if tuple(tf.convert_to_tensor(alpha).shape) != ():
            raise ValueError("`params` alpha must be a scalar.")
        self._num_bins = num_bins
        self._x_min = float(x_min)
        self._x_max = float(x_max)
        # Kept by reference (variables are re-read on every call).
        self._alpha = alpha
        self._xi = xi
        super().__init__(
            forward_min_event_ndims=0,
            validate_args=validate_args,
            dtype=xi_value.dtype,
            parameters=parameters,
            name=name,
        )

    @classmethod
    def _parameter_properties(cls, dtype: tf.DType, num_classes: Any = None) -> dict:
        # α and ξ are shared by all elements: the bijector has no batch shape.
        return {}

    @classmethod
    def _is_increasing(cls, **kwargs: Any) -> bool:
        return True

    @property
    def num_bins(self) -> int:
        return self._num_bins

    @property
    def x_min(self) -> float:
        return self._x_min

    @property
    def x_max(self) -> float:
        return self._x_max

    @property
    def bin_width(self) -> float:
        return (self._x_max - self._x_min) / self._num_bins

    def knots(self) -> tf.Tensor:
        """Latent knots ``[y_0, ..., y_Q]``, shape ``[Q + 1]``."""
        alpha = tf.convert_to_tensor(self._alpha, dtype=self.dtype)
        heights = tf.exp(tf.convert_to_tensor(self._xi, dtype=self.dtype))
        return alpha + tf.concat([tf.zeros([1], self.dtype), tf.cumsum(heights)], axis=0)

    def edges(self) -> tf.Tensor:
        """Data bin edges ``[e_0, ..., e_Q]`` = ``x_min + k w``, shape ``[Q + 1]``."""
        return self._x_min + self.bin_width * tf.range(self._num_bins + 1, dtype=self.dtype)

    def _log_slopes(self) -> tf.Tensor:
        """``log s_k = ξ_k - log w``, shape ``[Q]``."""
        return tf.convert_to_tensor(self._xi, dtype=self.dtype) - math.log(self.bin_width)

    def _bin(self, t: tf.Tensor, breakpoints: tf.Tensor) -> tf.Tensor:
        """0-based bin of ``t`` among ``breakpoints`` (edges or knots), in [0, Q-1].

        Counts the interior breakpoints <= t, which clips values outside the
        outer breakpoints to the end bins (the linear extension).
        """
        if self.validate_args:
            assertion = tf.debugging.assert_equal(
                tf.reduce_any(tf.math.is_nan(t)), False, message=f"{self.name}: input contains NaN."
            )
            with tf.control_dependencies([assertion]):
                t = tf.identity(t)
        k = tf.searchsorted(breakpoints[None, 1:-1], tf.reshape(t, [1, -1]), side="right")
        return tf.reshape(k, tf.shape(t))

    def _forward(self, z: tf.Tensor, **kwargs) -> tf.Tensor:
        knots = self.knots()
        k = self._bin(z, knots)
        inverse_slope = tf.exp(-tf.gather(self._log_slopes(), k))
        return tf.gather(self.edges(), k) + (z - tf.gather(knots, k)) * inverse_slope

    def _inverse(self, x: tf.Tensor, **kwargs) -> tf.Tensor:
        edges = self.edges()
        k = self._bin(x, edges)
        slope = tf.exp(tf.gather(self._log_slopes(), k))
        return tf.gather(self.knots(), k) + (x - tf.gather(edges, k)) * slope

    def _forward_log_det_jacobian(self, z: tf.Tensor, **kwargs) -> tf.Tensor:
        return -tf.gather(self._log_slopes(), self._bin(z, self.knots()))

    def _inverse_log_det_jacobian(self, x: tf.Tensor, **kwargs) -> tf.Tensor:
        return tf.gather(self._log_slopes(), self._bin(x, self.edges()))


def _check_num_bins(num_bins: int) -> None:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"`num_bins` must be an integer >= 1; got {num_bins!r}.")
