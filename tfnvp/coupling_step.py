"""Real NVP's step type: an affine coupling and, optionally, its batch norm.

One step, data -> latent (section 3.3 and 3.7)::

    y = coupling(x)          eqs. (6)-(9), conditioner ShiftAndLogScale(body)
    y = batch_norm(y)        section 3.7 (if ``batch_norm``)

``CouplingStep`` is a ``tfnvp.multiscale.StepBuilder``: it creates the
step's layers (``conditioner``: a ``ShiftAndLogScale`` around a body from
``body(position)``; ``statistics``: a ``BatchNormStatistics``), named
``coupling_<index>`` and ``batch_norm_<index>``, and builds the two bijectors
from them.  The images' ``RealNVP`` (ResNet bodies) and the vectors'
``DenseRealNVP`` (MLP bodies) share it.
"""

from __future__ import annotations

from typing import Callable, Mapping

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.batch_norm import BatchNorm, BatchNormStatistics
from tfnvp.bijectors.coupling import AffineCoupling
from tfnvp.multiscale import Position, Step, StepBuilder
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale

tfb = tfp.bijectors

__all__ = ["CouplingStep"]


class CouplingStep(StepBuilder):
    """Affine coupling (+ batch norm) steps.

    Args:
      body: ``body(position, out_channels)``: the conditioner body of the step at
        ``position``, a Keras layer producing ``out_channels = 2 *
        position.channels`` features whose last layer starts at zero.
      dtype: the flow's dtype (variables of the heads and statistics).
      batch_norm: follow the coupling with a ``BatchNorm`` bijector.
      batch_norm_momentum: decay of its running statistics.
      running_average_batch_norm: appendix-E variant (see ``BatchNorm``).
      recompute_gradients: see ``ShiftAndLogScale``.
    """

    def __init__(self, body: Callable[[Position, int], keras.layers.Layer],
                 dtype: tf.DType | str, batch_norm: bool = True,
                 batch_norm_momentum: float = 0.99, running_average_batch_norm: bool = False,
                 recompute_gradients: bool = False):
        self._body = body
        self._dtype = tf.as_dtype(dtype).name
        self._batch_norm = bool(batch_norm)
        self._momentum = float(batch_norm_momentum)
        self._running_average = bool(running_average_batch_norm)
        self._recompute = bool(recompute_gradients)

    def layers(self, step: Step, position: Position) -> dict[str, keras.layers.Layer]:
        width, index = position.channels, position.index
        layers = {"conditioner": ShiftAndLogScale(
            self._body(position, 2 * width), width, recompute_gradients=self._recompute,
            dtype=self._dtype, name=f"coupling_{index}")}
        if self._batch_norm:
            layers["statistics"] = BatchNormStatistics(width, dtype=self._dtype,
                                                       name=f"batch_norm_{index}")
        return layers

    def bijectors(self, step: Step, layers: Mapping[str, keras.layers.Layer],
                  position: Position, event_ndims: int) -> list[tfb.Bijector]:
        index = position.index
        result: list[tfb.Bijector] = [AffineCoupling(
            layers["conditioner"], mask=step.mask, parity=step.parity, event_ndims=event_ndims,
            name=f"coupling_{index}")]
        if "statistics" in layers:
            result.append(BatchNorm(layers["statistics"], momentum=self._momentum,
                                    running_average_in_training=self._running_average,
                                    event_ndims=event_ndims, name=f"batch_norm_{index}"))
        return result
