"""A 1-D density model with a piecewise-linear flow: ``PiecewiseLinearFlow``.

Real NVP (Dinh, Sohl-Dickstein & Bengio, ICLR 2017, §3.1) trains a bijection
``f`` from data ``x`` to latent ``z`` by maximum likelihood through the
change-of-variable formula ``log p_X(x) = log p_Z(f(x)) + log |det df/dx|``;
here ``f`` is ``tfnvp.bijectors.piecewise_linear.PiecewiseLinear`` (scalar data).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.piecewise_linear import PiecewiseLinear, PiecewiseLinearParams

tfd = tfp.distributions

__all__ = ["PiecewiseLinearFlow"]


@keras.saving.register_keras_serializable(package="tfnvp")
class PiecewiseLinearFlow(keras.Model):
    """1-D density model ``p(x) = N(f(x); 0, 1) · f'(x)`` with f piecewise linear.

    ``self.distribution`` is ``tfd.TransformedDistribution(tfd.Normal(0, 1),
    PiecewiseLinear(...))``; the parameters live in ``self.bin_params`` so
    ``self.trainable_variables`` contains α and ξ. Calling the model returns
    ``log_prob(x)`` elementwise (train by minimizing its negative mean).

    Args:
      num_bins: number of bins Q >= 1.
      x_min, x_max: binned data interval (see `PiecewiseLinear`).
      **kwargs: forwarded to `keras.Model` (e.g. ``name``, ``dtype``).

    Example:
      >>> model = PiecewiseLinearFlow(32, x_min=-5.0, x_max=5.0)
      >>> nll = -tf.reduce_mean(model(x))       # x: float32, any shape
      >>> samples = model.distribution.sample(1000)
    """

    def __init__(self, num_bins: int, x_min: float, x_max: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.bin_params = PiecewiseLinearParams(num_bins, dtype=self.dtype_policy)
        self.bijector = PiecewiseLinear(num_bins, x_min, x_max, self.bin_params)
        dtype = self.bijector.dtype
        self.distribution = tfd.TransformedDistribution(
            tfd.Normal(tf.zeros([], dtype), tf.ones([], dtype)), self.bijector
        )
        self.x_min, self.x_max = float(x_min), float(x_max)
        self.built = True

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_bins": self.bin_params.num_bins,
                "x_min": self.x_min, "x_max": self.x_max}

    def log_prob(self, x: Any) -> tf.Tensor:
        # Evaluate on a fresh tensor: TFP caches bijector results keyed by the
        # input tensor object, so re-evaluating the same eager tensor after a
        # weight update would return stale values (tensorflow/probability#1510).
        x = tf.identity(tf.convert_to_tensor(x, self.distribution.dtype))
        return self.distribution.log_prob(x)

    def nll(self, x: Any, training: bool = False) -> tf.Tensor:
        """``-log p(x)`` elementwise, the training objective (as ``FlowModel.nll``;
        the flow has no training mode, ``training`` is ignored)."""
        return -self.log_prob(x)

    def call(self, x: Any) -> tf.Tensor:
        return self.log_prob(x)
