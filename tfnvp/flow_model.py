"""What every tfnvp flow model shares: modes, the user-facing API, coupling steps.

A ``FlowModel`` is a ``keras.Model`` that owns the layers of a flow (so
``trainable_variables`` is complete) and exposes it as a
``tfd.TransformedDistribution`` over ``N(0, I)``.  Subclasses (``RealNVP`` for
images, ``DenseRealNVP`` for vectors) say how a flow is built for an input's
event shape and how inputs are checked; this base class provides

* the explicit, mutable ``training_mode`` (batch statistics vs. running
  averages) and the ``mode(training)`` context manager, propagated to every
  ``ModalBijector`` of every flow built so far;
* ``log_prob``, ``encode``, ``decode``, ``sample`` and Keras' ``call``, each
  checking its input and running in the right mode;
* ``coupling_steps``: one affine coupling (eqs. 6-9) and, optionally, the
  batch-norm bijector that follows it (section 3.7).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors.base import ModalBijector
from tfnvp.bijectors.batch_norm import BatchNorm, BatchNormStatistics
from tfnvp.bijectors.coupling import AffineCoupling
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["Flow", "FlowModel"]


@dataclasses.dataclass(frozen=True)
class Flow:
    """A flow built from a model's layers for one event shape."""

    bijector: tfb.Bijector
    distribution: tfd.TransformedDistribution
    modal: tuple[ModalBijector, ...]


class FlowModel(keras.Model):
    """Base class of tfnvp's flow models; see the module docstring.

    Subclasses implement ``_build_flow(event_shape) -> Flow``,
    ``_check_inputs(x)`` and ``_check_latents(z)`` (which return fresh
    tensors of ``flow_dtype``: TFP's cache is keyed by tensor object and would
    otherwise return results from before a weight update), and set
    ``event_shape``.
    """

    def __init__(self, dtype: tf.DType | str, validate_args: bool, name: str):
        flow_dtype = tf.as_dtype(dtype)
        if flow_dtype not in (tf.float32, tf.float64):
            raise ValueError(f"dtype must be float32 or float64, got {flow_dtype.name}.")
        super().__init__(name=name, dtype=flow_dtype.name)
        self.flow_dtype = flow_dtype
        self.validate_args = bool(validate_args)
        self.event_shape: tuple[int, ...] = ()
        self._training_mode = False
        self._flows: dict[tuple[int, ...], Flow] = {}

    # ---------------------------------------------------------------- subclass
    def _build_flow(self, event_shape: tuple[int, ...]) -> Flow:
        raise NotImplementedError

    def _check_inputs(self, x) -> tf.Tensor:
        raise NotImplementedError

    def _check_latents(self, z) -> tf.Tensor:
        raise NotImplementedError

    # -------------------------------------------------------------------- flow
    def _flow(self, event_shape: Sequence[int] | None = None) -> Flow:
        shape = self.event_shape if event_shape is None else tuple(int(d) for d in event_shape)
        if shape not in self._flows:
            self._flows[shape] = self._build_flow(shape)
        return self._flows[shape]

    def _event_of(self, t: tf.Tensor) -> tuple[int, ...]:
        return tuple(t.shape[t.shape.rank - len(self.event_shape):])

    @property
    def distribution(self) -> tfd.TransformedDistribution:
        """The flow as a ``tfd.TransformedDistribution`` (log-probs in nats).

        TFP caches bijector results keyed by the input tensor object.  Inside
        ``tf.function`` every trace has fresh tensors, but in eager mode a
        tensor reused after a weight update can hit the cache and return the
        old result; the model's own methods (``log_prob``, ``encode``, ...)
        always pass fresh tensors, so prefer them for eager evaluation.
        """
        return self._flow().distribution

    @property
    def bijector(self) -> tfb.Bijector:
        """The whole flow; ``forward`` maps latents to data."""
        return self._flow().bijector

    def coupling_steps(self, conditioner: ShiftAndLogScale,
                       statistics: BatchNormStatistics | None, mask, parity: int,
                       event_ndims: int, index: int, momentum: float = 0.99,
                       running_average: bool = False) -> list[ModalBijector]:
        """A coupling and, if ``statistics`` is given, its batch norm (data -> latent order)."""
        steps: list[ModalBijector] = [AffineCoupling(
            conditioner, mask=mask, parity=parity, event_ndims=event_ndims,
            training=self._training_mode, name=f"coupling_{index}")]
        if statistics is not None:
            steps.append(BatchNorm(statistics, momentum=momentum,
                                   running_average_in_training=running_average,
                                   event_ndims=event_ndims, training=self._training_mode,
                                   name=f"batch_norm_{index}"))
        return steps

    # -------------------------------------------------------------------- mode
    @property
    def training_mode(self) -> bool:
        """Training (batch statistics) or evaluation (running statistics)."""
        return self._training_mode

    @training_mode.setter
    def training_mode(self, value: bool) -> None:
        self._training_mode = bool(value)
        for flow in self._flows.values():
            for bijector in flow.modal:
                bijector.training = self._training_mode

    @contextlib.contextmanager
    def mode(self, training: bool | None) -> Iterator[None]:
        """Temporarily sets ``training_mode`` (``None`` keeps it).

        The mode is a Python value: inside ``tf.function`` it is read when
        the function is traced.
        """
        if training is None:
            yield
            return
        previous = self._training_mode
        self.training_mode = training
        try:
            yield
        finally:
            self.training_mode = previous

    # --------------------------------------------------------------------- API
    def call(self, x: tf.Tensor, training: bool | None = None) -> tf.Tensor:
        """Keras entry point: the log-density of ``x`` in nats."""
        return self.log_prob(x, training=training)

    def log_prob(self, x: tf.Tensor, training: bool | None = False) -> tf.Tensor:
        """Log-density (nats) of ``x``, one value per event.

        ``training=True`` uses (and updates) batch statistics; ``None`` keeps
        the current ``training_mode``.
        """
        x = self._check_inputs(x)
        if training or (training is None and self._training_mode):
            self._check_training_batch(x)
        with self.mode(training):
            return self._flow(self._event_of(x)).distribution.log_prob(x)

    def _check_training_batch(self, x: tf.Tensor) -> None:
        """Batch statistics need a batch: one batch axis, not empty (static shapes)."""
        batch = x.shape[:x.shape.rank - len(self.event_shape)]
        if batch.rank != 1 or batch[0] == 0:
            raise ValueError(
                "training=True normalizes with batch statistics and needs a non-empty batch "
                f"of shape [batch, {', '.join(str(d) for d in self.event_shape)}]; got shape "
                f"{x.shape}. Use training=False (running statistics) for single or empty inputs.")

    def encode(self, x: tf.Tensor) -> tf.Tensor:
        """Latent ``z = f(x)`` of the input's shape (evaluation mode)."""
        x = self._check_inputs(x)
        with self.mode(False):
            return self._flow(self._event_of(x)).bijector.inverse(x)

    def decode(self, z: tf.Tensor) -> tf.Tensor:
        """Data ``x = f^-1(z)`` from latents (evaluation mode)."""
        z = self._check_latents(z)
        with self.mode(False):
            return self._flow(self._event_of(z)).bijector.forward(z)

    def sample(self, num_samples: int, temperature: float = 1.0,
               seed: tf.Tensor | Sequence[int] | None = None,
               event_shape: Sequence[int] | None = None) -> tf.Tensor:
        """``num_samples`` draws decoded from ``z ~ N(0, temperature^2 I)``.

        ``seed`` is a stateless seed (a pair of ints or a shape-[2] tensor).
        """
        if temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {temperature}.")
        shape = (int(num_samples),) + tuple(event_shape or self.event_shape)
        if seed is None:
            z = tf.random.normal(shape, dtype=self.flow_dtype)
        else:
            z = tf.random.stateless_normal(shape, seed=seed, dtype=self.flow_dtype)
        return self.decode(temperature * z)

    def num_dims(self) -> int:
        """Dimensions ``D`` of one event at the model's own size."""
        return int(np.prod(self.event_shape))
