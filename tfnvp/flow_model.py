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
* ``recalibrate``: every batch-norm statistic recomputed over training batches;
* ``coupling_steps``: one affine coupling (eqs. 6-9) and, optionally, the
  batch-norm bijector that follows it (section 3.7).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Iterable, Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp import running_average
from tfnvp.bijectors.base import ModalBijector
from tfnvp.bijectors.batch_norm import BatchNorm, BatchNormStatistics
from tfnvp.bijectors.coupling import AffineCoupling
from tfnvp.nets.resnet import BatchNormalization
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


class _Compiled:
    """Holds a model's compiled helper functions out of Keras' and SavedModel's tracking."""

    def __init__(self):
        self.recalibration_step = None


class FlowModel(keras.Model):
    """Base class of tfnvp's flow models; see the module docstring.

    Subclasses implement ``_build_flow(event_shape) -> Flow``,
    ``_check_inputs(x)`` and ``_check_latents(z)`` (which return fresh
    tensors of ``flow_dtype``: TFP's cache is keyed by tensor object and would
    otherwise return results from before a weight update), and set
    ``event_shape``.  A subclass whose data lie in a bounded interval sets
    ``data_support = (low, high)``: ``decode`` and ``sample`` return values in
    ``[low, high)``.
    """

    data_support: tuple[float, float] | None = None

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
        self._compiled = _Compiled()

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
        """Data ``x = f^-1(z)`` from latents (evaluation mode), within ``data_support``.

        For a model with a bounded ``data_support = (low, high)`` the result
        is clipped to ``[low, high')``, ``high'`` the largest float below
        ``high``: the flow maps all of latent space onto the real line, and the
        logit preprocessing's inverse sends latents beyond what the data
        occupies slightly outside ``[0, 256)`` (e.g. -12.8 for an early
        model at temperature 1), where ``log_prob`` is not defined.  Clipping
        leaves every value inside the support unchanged, so
        ``decode(encode(x)) == x`` still holds and ``log_prob(sample(n))`` is
        finite.
        """
        z = self._check_latents(z)
        with self.mode(False):
            x = self._flow(self._event_of(z)).bijector.forward(z)
        return self._clip_to_support(x)

    def _clip_to_support(self, x: tf.Tensor) -> tf.Tensor:
        if self.data_support is None:
            return x
        low, high = self.data_support
        top = np.nextafter(np.array(high, x.dtype.as_numpy_dtype),
                           np.array(low, x.dtype.as_numpy_dtype))
        return tf.clip_by_value(x, tf.constant(low, x.dtype), tf.constant(top, x.dtype))

    def sample(self, num_samples: int, temperature: float = 1.0,
               seed: tf.Tensor | Sequence[int] | None = None,
               event_shape: Sequence[int] | None = None) -> tf.Tensor:
        """``num_samples`` draws decoded from ``z ~ N(0, temperature^2 I)``.

        ``seed`` is a stateless seed (a pair of ints or a shape-[2] tensor).
        Values lie in ``data_support`` (see ``decode``).
        """
        if temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {temperature}.")
        shape = (int(num_samples),) + tuple(event_shape or self.event_shape)
        if seed is None:
            z = tf.random.normal(shape, dtype=self.flow_dtype)
        else:
            z = tf.random.stateless_normal(shape, seed=seed, dtype=self.flow_dtype)
        return self.decode(temperature * z)

    # ------------------------------------------------------------ statistics
    def batch_norm_layers(self) -> list[keras.layers.Layer]:
        """Every layer holding batch-norm statistics: the ``BatchNorm`` bijectors'
        ``BatchNormStatistics`` and the conditioners' ``BatchNormalization``."""
        return [layer for layer in self._flatten_layers(include_self=False, recursive=True)
                if isinstance(layer, (BatchNormStatistics, BatchNormalization))]

    def recalibrate(self, dataset: Iterable, num_batches: int) -> int:
        """Recomputes every batch-norm statistic over ``num_batches`` training batches.

        Returns the number of batches used (fewer if ``dataset`` runs out).
        Running averages lag a network that is still changing; evaluation,
        sampling and export should use statistics of the current network.
        This pass resets every layer's update counter and runs the batches
        through the flow once each (a compiled training-mode ``log_prob``;
        nothing trainable changes) in the cumulative mode of
        ``tfnvp.running_average``: each batch normalization ``k`` updates

            mu_k <- mu_k + (b_k - mu_k) / n,   v_k likewise with the pooled variance,

        so that after ``N`` batches ``(mu_k, v_k)`` are the exact mean and
        variance of its inputs over all ``N`` batches, and *normalizes with
        its updated* ``(mu_k, v_k)`` rather than with the batch's moments.
        That is the "running" mode evaluation uses: the inputs of layer ``k``
        are produced by earlier layers (data -> latent order) normalized with
        their own recalibrated estimates, which converge with ``n`` to their
        final values, rather than with per-batch statistics that evaluation
        never sees.  With ``N`` batches of ``B`` examples, each estimate has
        the sampling error of ``N * B`` examples.

        ``dataset`` yields batches of model inputs (e.g. the trainer's
        training pipeline: dequantized, augmented images).  Under
        ``tf.distribute`` call it in cross-replica context (inside
        ``strategy.scope()``): every replica's copy gets the same statistics.
        """
        if int(num_batches) < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches!r}.")
        if self._compiled.recalibration_step is None:
            self._compiled.recalibration_step = tf.function(
                lambda x: self.log_prob(x, training=True), reduce_retracing=True)
        used = 0
        with running_average.cumulative():
            for batch in dataset:
                if used == 0:
                    if not all(layer.built for layer in self.batch_norm_layers()):
                        self.log_prob(batch, training=False)  # Builds the conditioners.
                    for layer in self.batch_norm_layers():
                        layer.num_updates.assign(0.0)
                self._compiled.recalibration_step(batch)
                used += 1
                if used == int(num_batches):
                    break
        if used == 0:
            raise ValueError("recalibrate: the dataset yielded no batch.")
        return used

    def num_dims(self) -> int:
        """Dimensions ``D`` of one event at the model's own size."""
        return int(np.prod(self.event_shape))
