"""Real NVP's step type: a coupling and, optionally, its batch norm.

One step, data -> latent (section 3.3 and 3.7)::

    y = coupling(x)          eqs. (6)-(9), conditioner ShiftAndLogScale(body)
    y = batch_norm(y)        section 3.7 (if ``batch_norm``)

The coupling is Real NVP's affine one (``coupling="affine"``) or Flow++'s
logistic-mixture CDF coupling (``coupling="logistic_mixture"``,
``LogisticMixtureCoupling`` with a ``LogisticMixtureParameters`` head of
``mixture_components`` components); the body, masks and batch norm are the
same.

The affine coupling's log-scale is ``s = scale * tanh(raw)`` (``ShiftAndLogScale``)
with a per-channel ``scale`` starting at 1, or, with ``release_scale``, the
authors' release's: one scalar per coupling, starting at 0 in checkerboard
couplings (a new one has ``s = 0`` exactly) and at 1 in channel couplings,
the checkerboard couplings' in the L2 penalty (the release penalizes the
variables named ``rescaling_scale``, the checkerboard couplings', and not the
channel couplings' ``scale``).

``CouplingStep`` is a ``tfnvp.multiscale.StepBuilder``: it creates the
step's layers (``conditioner``: a ``ShiftAndLogScale`` around a body from
``body(step, position, out_channels)``; ``statistics``: a ``BatchNormStatistics``), named
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
from tfnvp.bijectors.logistic_mixture_coupling import LogisticMixtureCoupling
from tfnvp.errors import UsageError
from tfnvp.steps.multiscale import Position, Step, StepBuilder
from tfnvp.nets.logistic_mixture_parameters import LogisticMixtureParameters
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale

tfb = tfp.bijectors

__all__ = ["COUPLINGS", "CouplingStep"]

#: The coupling types of ``CouplingStep`` (``coupling=``).
COUPLINGS = ("affine", "logistic_mixture")


class CouplingStep(StepBuilder):
    """Coupling (+ batch norm) steps.

    Args:
      body: ``body(step, position, out_channels)``: the conditioner body of
        ``step`` (its mask and parity) at ``position``, a Keras layer producing
        ``out_channels`` features (``2 * position.channels`` for the affine
        coupling, ``(3K + 2) * position.channels`` for the logistic mixture)
        whose last layer starts at zero (unless ``release_scale``).
      dtype: the flow's dtype (variables of the heads and statistics).
      batch_norm: follow the coupling with a ``BatchNorm`` bijector.
      batch_norm_momentum: decay of its running statistics.
      running_average_batch_norm: appendix-E variant (see ``BatchNorm``).
      recompute_gradients: see ``ShiftAndLogScale``.
      coupling: one of ``COUPLINGS`` (module docstring).
      mixture_components: ``K`` of the logistic-mixture coupling.
      release_scale: the affine coupling's log-scale factor as in the release
        (module docstring).
    """

    def __init__(self, body: Callable[[Step, Position, int], keras.layers.Layer],
                 dtype: tf.DType | str, batch_norm: bool = True,
                 batch_norm_momentum: float = 0.99, running_average_batch_norm: bool = False,
                 recompute_gradients: bool = False, coupling: str = "affine",
                 mixture_components: int = 4, release_scale: bool = False):
        if coupling not in COUPLINGS:
            raise UsageError(f"coupling must be one of {COUPLINGS}, got {coupling!r}.")
        if int(mixture_components) < 1:
            raise UsageError(f"mixture_components must be at least 1, got {mixture_components!r}.")
        self._coupling = coupling
        self._components = int(mixture_components)
        self._body = body
        self._dtype = tf.as_dtype(dtype).name
        self._batch_norm = bool(batch_norm)
        self._momentum = float(batch_norm_momentum)
        self._running_average = bool(running_average_batch_norm)
        self._recompute = bool(recompute_gradients)
        self._release_scale = bool(release_scale)

    def layers(self, step: Step, position: Position) -> dict[str, keras.layers.Layer]:
        width, index = position.channels, position.index
        common = dict(recompute_gradients=self._recompute, dtype=self._dtype,
                      name=f"coupling_{index}")
        if self._coupling == "affine":
            checkerboard = isinstance(step.mask, str) and step.mask == "checkerboard"
            scale = (dict(scalar_scale=True, initial_scale=0.0 if checkerboard else 1.0,
                          regularized_scale=checkerboard) if self._release_scale else {})
            conditioner = ShiftAndLogScale(self._body(step, position, 2 * width), width,
                                           **scale, **common)
        else:
            out_channels = LogisticMixtureParameters.output_channels(width, self._components)
            conditioner = LogisticMixtureParameters(self._body(step, position, out_channels),
                                                    width, self._components, **common)
        layers = {"conditioner": conditioner}
        if self._batch_norm:
            layers["statistics"] = BatchNormStatistics(width, dtype=self._dtype,
                                                       name=f"batch_norm_{index}")
        return layers

    def bijectors(self, step: Step, layers: Mapping[str, keras.layers.Layer],
                  position: Position, event_ndims: int) -> list[tfb.Bijector]:
        index = position.index
        kind = AffineCoupling if self._coupling == "affine" else LogisticMixtureCoupling
        result: list[tfb.Bijector] = [kind(
            layers["conditioner"], mask=step.mask, parity=step.parity, event_ndims=event_ndims,
            name=f"coupling_{index}")]
        if "statistics" in layers:
            result.append(BatchNorm(layers["statistics"], momentum=self._momentum,
                                    running_average_in_training=self._running_average,
                                    event_ndims=event_ndims, name=f"batch_norm_{index}"))
        return result
