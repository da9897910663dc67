"""What every tfnvp flow model shares: the engine, the user-facing API, the objective.

A ``FlowModel`` is a ``keras.Model`` that owns the layers of a flow (so
``trainable_variables`` is complete) and exposes it as a
``tfd.TransformedDistribution`` over ``N(0, I)``.  Subclasses (``RealNVP`` and
``Glow`` for images, via ``tfnvp.models.image_flow``; ``DenseRealNVP`` for vectors)
declare their architecture once, as
``tfnvp.multiscale`` scales of steps (``_create_steps``), from which the
layers, the bijector chain (``_flow_bijectors``) and the latent layout
derive, and say how inputs are checked.  This base class provides

* ``objective`` (``Objective``: the loss and its parts, composed in one place,
  ``_objective``), ``log_prob`` and ``nll`` (its fields), ``encode``, ``decode``,
  ``sample`` and Keras' ``call``,
  each checking its input, then, called eagerly, running through a
  ``tf.function`` the model keeps per option combination and input signature
  (``_compiled_call``; inline inside a caller's ``tf.function``).  The mode
  is a call argument: ``training`` (and a conditioning ``context``) travel as
  TFP bijector kwargs through the chain to every conditioner
  (``tfnvp.bijectors.base``); no bijector holds a mode, and TFP's cache,
  keyed on those kwargs, never serves one mode's result to the other;
* ``regularization_loss``: the paper's L2 penalty on the conditioners'
  weight scales (section 4.1);
* class conditioning (``_make_class_conditional``, ``tfnvp.conditional``):
  ``labels=`` become the one-hot ``context`` and select the prior's class (or,
  for a flow whose own steps hold the label's prior, Glow's release form, only
  the ``context``);
* ``recalibrate``: every batch-norm statistic recomputed over training batches;
* Keras' conventions: built at construction (``_build_weights``), ``fit`` and
  ``evaluate`` by maximum likelihood (``tfnvp.models.keras_fit.KerasFit``: its
  steps minimize ``objective``'s ``mean(nll)`` plus ``regularization_loss``, on
  batches of the forms ``unpack_batch`` reads); the subclasses are
  registered serializable, so ``.keras`` files load without ``custom_objects``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable, Sequence

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp import _compat, graph_optimization, validation
from tfnvp.steps import multiscale
from tfnvp.bijectors.batch_norm import BatchNormStatistics
from tfnvp.models.conditional import ClassConditionalPrior, check_labels, one_hot_context
from tfnvp.models.keras_fit import KerasFit, unpack_batch
from tfnvp.models.objective import Objective
from tfnvp.dequantizers.uniform import bits_per_dim_from_log_prob
from tfnvp.nets.batch_norm import BatchNormalization
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale
from tfnvp.nets.weight_norm import WeightNormConv2D
from tfnvp.running_average import RECALIBRATE, Training

tfb = tfp.bijectors
tfd = tfp.distributions

__all__ = ["Flow", "FlowModel", "PAPER_L2"]

# Section 4.1: "L2 regularization on the weight scale parameters with coefficient 5 * 10^-5".
PAPER_L2 = 5e-5

@dataclasses.dataclass(frozen=True)
class Flow:
    """A flow built from a model's layers for one event shape.

    Once the model is built, the bijector holds the TensorFlow variables behind the
    flow's Keras weights (``FlowModel._expose_variables``), so that ``tf.Module``'s
    ``trainable_variables`` of the bijector, of the distribution and of anything
    that holds them (``tfb.Invert``, ``tfd.Mixture``, a user's ``tf.Module``) lists
    each of them once, as TFP's training idiom expects.
    """

    bijector: tfb.Bijector
    distribution: tfd.TransformedDistribution


class _Untracked:
    """Holds a model's engine state and compiled helpers out of Keras' and
    SavedModel's tracking (the layers themselves are tracked by name)."""

    def __init__(self):
        self.recalibration_step = None
        self.scales: tuple[multiscale.Scale, ...] = ()
        self.step_layers: list[dict[str, keras.layers.Layer]] = []
        # The eager methods' tf.functions (FlowModel._compiled_call).
        self.compiled: dict[tuple, tf.types.experimental.PolymorphicFunction] = {}
        self.channels = 0
        # fit/evaluate's bits/dim (FlowModel.metrics); not a weight of the model.
        self.bits_per_dim = keras.metrics.Mean(name="bits_per_dim")
        # Whether the [0, 1]-pixels warning was given (ImageFlowModel._warn_if_unit_scaled).
        self.unit_scale_warned = False
        # Whether a class-conditional model's base is ClassConditionalPrior (else N(0, I)).
        self.class_prior = False


def _run_present(body, present: tuple[bool, ...], options: dict, *tensors: tf.Tensor):
    """``body`` on ``tensors`` with ``None`` where ``present`` says an argument was not
    given (``FlowModel._compiled_call``)."""
    given = iter(tensors)
    return body(*(next(given) if p else None for p in present), **options)


def _mode(training: Training | None) -> Training:
    """The mode a call runs in: ``None`` is evaluation, like ``False``."""
    return training or False


class FlowModel(KerasFit, keras.Model):
    """Base class of tfnvp's flow models; see the module docstring.

    Subclasses call ``_create_steps(scales, channels)`` in ``__init__``,
    implement ``_build_flow(event_shape) -> Flow`` (with
    ``_flow_bijectors(event_ndims)`` for the declared part), ``_check_inputs(x)``
    and ``_check_latents(z)`` (which return fresh tensors of ``flow_dtype``:
    TFP's cache is keyed by tensor object and would otherwise return results
    from before a weight update), and set ``event_shape``.  A subclass whose
    data lie in a bounded interval sets ``data_support = (low, high)``:
    ``decode`` and ``sample`` return values in ``[low, high)``.
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
        self._flows: dict[tuple[int, ...], Flow] = {}
        self._untracked = _Untracked()
        self.num_classes: int | None = None  # See _make_class_conditional.

    # ------------------------------------------------------------ engine
    def _create_steps(self, scales: Sequence[multiscale.Scale], channels: int,
                      event_ndims: int) -> None:
        """Creates (and tracks) every step's layers of the declared ``scales``."""
        multiscale.check_scales(scales, event_ndims)
        engine = self._untracked
        engine.scales, engine.channels = tuple(scales), int(channels)
        engine.step_layers = multiscale.create_layers(self, scales, channels)

    def _flow_bijectors(self, event_ndims: int) -> list[tfb.Bijector]:
        """The declared scales' bijectors, data -> latent order."""
        engine = self._untracked
        return multiscale.build_bijectors(engine.scales, engine.step_layers, engine.channels,
                                          event_ndims)

    def _role(self, role: str) -> list[keras.layers.Layer]:
        return [layers[role] for layers in self._untracked.step_layers if role in layers]

    @property
    def conditioners(self) -> list[keras.layers.Layer]:
        """Every step's conditioner (``ShiftAndLogScale``), data -> latent order."""
        return self._role("conditioner")

    @property
    def statistics(self) -> list[BatchNormStatistics]:
        """Every batch-norm bijector's ``BatchNormStatistics``, data -> latent order."""
        return self._role("statistics")

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
            # Eagerly, even when first asked for inside a trace: the flow is cached and
            # used by later functions, so its constants must not belong to one graph.
            with tf.init_scope():
                self._flows[shape] = self._build_flow(shape)
                if self.built:
                    self._expose_variables(self._flows[shape])
        return self._flows[shape]

    def _flow_layers(self) -> list[keras.layers.Layer]:
        """The layers whose weights the flow reads: every step's (not a dequantizer's or
        a class-conditional prior's)."""
        return [layer for layers in self._untracked.step_layers for layer in layers.values()]

    def _expose_variables(self, flow: Flow) -> None:
        """Hands ``flow.bijector`` the variables behind the flow layers' Keras weights.

        ``tf.Module.trainable_variables`` collects ``tf.Variable`` attributes of a
        module and of the modules it holds, and a Keras 3 layer is neither; the bijector
        (a ``tf.Module``) holding the backing variables themselves makes the TFP idiom
        ``tape.gradient(loss, dist.trainable_variables)`` see (and an optimizer update)
        exactly the model's weights, each once.  Tracked like any module attribute, so
        ``tf.train.Checkpoint(distribution=...)`` saves and restores them too.  Called
        once the model is built (its layers create their weights on the first call).
        """
        variables, seen = [], set()
        for layer in self._flow_layers():
            for weight in layer.variables:
                backing = weight.value  # The tf.Variable behind a Keras variable.
                if id(backing) not in seen:
                    seen.add(id(backing))
                    variables.append(backing)
        flow.bijector.model_variables = tuple(variables)

    def _event_of(self, t: tf.Tensor) -> tuple[int, ...]:
        return tuple(t.shape[t.shape.rank - len(self.event_shape):])

    def _batch_rank(self, t: tf.Tensor) -> int:
        return t.shape.rank - len(self.event_shape)

    def _batch_of(self, t: tf.Tensor) -> tf.TensorShape:
        return t.shape[:self._batch_rank(t)]

    # ------------------------------------------------------------ compiled
    def _compiled_call(self, method: str, body, batch_rank: int, batched: tuple,
                       fixed: tuple = (), **options):
        """``body(*batched, *fixed, **options)``, compiled when called eagerly.

        Inside a ``tf.function`` (a user's, ``fit``'s, an export's) the body
        runs inline, as it is traced.  Called eagerly, it runs through a
        ``tf.function`` the model keeps per ``method``, Python ``options``
        (the mode, the event shape), which arguments are present, and their
        dtypes and ranks, traced once: its ``input_signature`` has ``None``
        for the first ``batch_rank`` axes of every ``batched`` tensor, so a
        new batch size, sample count, temperature or seed value reuses the
        graph.  The graph is the one a user's ``tf.function`` would trace
        (the same fused chain, the same folded evaluation-mode batch norm),
        without Python between the ops, optimized with ``tfnvp.graph_optimization``'s
        rewrites (one round of Grappler's passes).  Callers check their inputs first,
        eagerly, so that bad input raises the same errors as uncompiled.
        The functions live in ``self._untracked``: not weights, not saved.
        """
        if tf.inside_function() or not self.built:  # Unbuilt: the weights are created eagerly.
            return body(*batched, *fixed, **options)
        present = tuple(t is not None for t in batched + fixed)
        batched = [tf.convert_to_tensor(t) for t in batched if t is not None]
        fixed = [tf.convert_to_tensor(t) for t in fixed if t is not None]
        specs = tuple([tf.TensorSpec([None] * batch_rank + t.shape[batch_rank:].as_list(), t.dtype)
                       for t in batched] + [tf.TensorSpec(t.shape, t.dtype) for t in fixed])
        key = (method, tuple(sorted(options.items())), present, specs)
        function = self._untracked.compiled.get(key)
        if function is None:
            # A partial, not a closure: TensorFlow counts traces per code object, and would
            # warn of "retracing" after five methods' first traces.
            function = tf.function(functools.partial(_run_present, body, present, options),
                                   input_signature=specs, autograph=False)
            self._untracked.compiled[key] = function
        with graph_optimization.first_call_rewrites():
            return function(*batched, *fixed)

    def compiled_functions(self) -> dict[str, list[tf.types.experimental.PolymorphicFunction]]:
        """The ``tf.function``s eager calls have compiled so far, by method name
        (``log_prob``, ``objective``, ``nll``, ``bits_per_dim``, ``encode``, ``decode``,
        ``sample``): one per combination of options and input signature (see
        ``_compiled_call``).
        ``experimental_get_tracing_count()`` of each says how often it was traced."""
        functions: dict[str, list] = {}
        for key, function in self._untracked.compiled.items():
            functions.setdefault(key[0], []).append(function)
        return functions

    @property
    def distribution(self) -> tfd.TransformedDistribution:
        """The flow as a ``tfd.TransformedDistribution`` (log-probs in nats).

        Its methods take the mode as bijector kwargs, e.g.
        ``log_prob(x, bijector_kwargs=dict(training=True))``; without them
        they run in evaluation mode.  TFP caches bijector results keyed by the
        input tensor object (and the kwargs).  Inside ``tf.function`` every
        trace has fresh tensors, but in eager mode a tensor reused after a
        weight update can hit the cache and return the old result; the
        model's own methods (``log_prob``, ``encode``, ...) always pass fresh
        tensors, so prefer them for eager evaluation.

        A class-conditional model has no single distribution: use
        ``log_prob(x, labels=...)`` and ``sample(n, labels=...)``.
        """
        if self.num_classes is not None:
            raise ValueError("A class-conditional model's distribution depends on the labels: "
                             "use log_prob(x, labels=...) and sample(n, labels=...).")
        return self._flow().distribution

    @property
    def bijector(self) -> tfb.Bijector:
        """The whole flow; ``forward`` maps latents to data."""
        return self._flow().bijector

    # --------------------------------------------------------------------- API
    def call(self, x: tf.Tensor, training: Training | None = None) -> tf.Tensor:
        """Keras entry point (``model(x)``, ``predict``): log-probabilities in nats, one per
        example.

        Continuous inputs (float pixels in ``[0, 256)``): ``log_prob(x)``.  8-bit images,
        as ``fit`` takes them: ``-nll(x) = log p(x + u) - log q(u | x)`` with ``u`` drawn
        by the model's dequantizer, a one-sample estimate of the lower bound on the
        discrete ``log P(x)`` (``bits_per_dim`` with a ``seed`` is its repeatable form).
        """
        if tf.convert_to_tensor(x).dtype == tf.uint8:
            return -self.nll(x, training=training)
        return self.log_prob(x, training=training)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        """``call``'s output shape: the batch axes of ``input_shape`` (one value per example)."""
        return tuple(input_shape[:len(input_shape) - len(self.event_shape)])

    @staticmethod
    def _bijector_kwargs(training: Training | None, context: tf.Tensor | None = None) -> dict:
        """The call arguments every bijector of the flow receives (``tfnvp.bijectors.base``)."""
        return dict(training=training or False, context=context)

    def log_prob(self, x: tf.Tensor, training: Training | None = False,
                 labels: tf.Tensor | None = None) -> tf.Tensor:
        """Log-density (nats) of ``x``, one value per event (given ``labels``, for a
        class-conditional model: ``log p(x | y)``).

        ``training=True`` normalizes with batch statistics and updates the
        running averages (once per call); ``False`` or ``None`` uses the
        running averages; ``tfnvp.running_average.RECALIBRATE`` is
        ``recalibrate``'s mode.  It is a Python value, read when a
        ``tf.function`` is traced.  Called eagerly it runs compiled (see
        ``_compiled_call``).
        """
        x = self._check_inputs(x)
        if training:
            self._check_training_batch(x)
        labels = self._labels_for(x, labels)
        return self._compiled_call("log_prob", self._log_prob, self._batch_rank(x), (x, labels),
                                   training=_mode(training))

    def _log_prob(self, x: tf.Tensor, labels: tf.Tensor | None, training: Training) -> tf.Tensor:
        return self._log_density(x, labels, training)[0]

    def objective(self, x: tf.Tensor, training: Training | None = False,
                  seed: tf.Tensor | Sequence[int] | None = None,
                  labels: tf.Tensor | None = None) -> Objective:
        """The training objective of ``x`` and its parts (``Objective``: the math).

        ``x``: continuous inputs (``log_q = 0``), or, for a model of discrete
        data (8-bit images, ``RealNVP``, ``Glow``), the uint8 images themselves,
        dequantized by the model's dequantizer (from the stateless ``seed`` if
        given: shape ``[2]`` for the batch, or one seed per image, ``[batch...,
        2]``, for noise that does not depend on the batch an image comes in;
        called eagerly without one, a seed is drawn from TensorFlow's global
        generator).  ``labels``: a class-conditional model's classes.
        ``training`` as in ``log_prob``.  Minimize ``mean(loss)`` plus
        ``regularization_loss()`` (``loss`` is ``nll`` but for Glow's release
        classification loss); ``nll``, ``log_prob`` and ``bits_per_dim`` are this
        method's fields.  Called eagerly it runs compiled.
        """
        return self._objective_call("objective", self._objective, x, training, seed, labels)

    def nll(self, x: tf.Tensor, training: Training | None = False,
            seed: tf.Tensor | Sequence[int] | None = None,
            labels: tf.Tensor | None = None) -> tf.Tensor:
        """Negative log-likelihood (nats), one value per event: ``objective(...).nll``.

        ``-log p(x)`` (``-log p(x | y)`` with ``labels``) of continuous
        inputs; of 8-bit images, the dequantization bound ``-log p(x + u) +
        log q(u | x)`` (see ``objective``).  Minimize its mean plus
        ``regularization_loss()``.
        """
        return self._objective_call("nll", self._nll, x, training, seed, labels)

    def _objective_call(self, method: str, body, x, training: Training | None, seed,
                        labels, **options) -> tf.Tensor:
        """``nll``-like ``method``: checks its inputs, then ``body(x, labels, seed, training,
        **options)`` (``options``: Python values, part of the compiled function's key)."""
        x, seed = self._check_nll_inputs(x, seed)
        if training:
            self._check_training_batch(x)
        labels = self._labels_for(x, labels)
        if seed is not None and tf.convert_to_tensor(seed).shape.rank > 1:  # One seed per example: batched too.
            return self._compiled_call(method, body, self._batch_rank(x), (x, labels, seed),
                                       training=_mode(training), **options)
        return self._compiled_call(method, body, self._batch_rank(x), (x, labels), (seed,),
                                   training=_mode(training), **options)

    def _log_density(self, x: tf.Tensor, labels: tf.Tensor | None, training: Training
                     ) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        """``(log_prob, log_prior, log_det, z)`` of continuous inputs: eq. (3), ``log p(x) =
        log p_Z(f(x)) + log|det df/dx|`` (``Objective``), and the latent ``z = f(x)``.

        Computed as ``tfd.TransformedDistribution.log_prob`` does (``inverse``,
        then the log-det from the chain's cache, then the prior of ``z``), bit for
        bit, keeping the two terms apart."""
        context, distribution = self._conditioned(x, labels)
        kwargs = self._bijector_kwargs(training, context)
        z = distribution.bijector.inverse(x, **kwargs)
        log_det = distribution.bijector.inverse_log_det_jacobian(
            x, event_ndims=len(self.event_shape), **kwargs)
        log_prior = distribution.distribution.log_prob(z)
        return log_prior + log_det, log_prior, log_det, z

    def _objective(self, x: tf.Tensor, labels: tf.Tensor | None, seed: tf.Tensor | None,
                   training: Training) -> Objective:
        """The one composition of the objective (``Objective``'s math), on checked inputs:
        dequantization, the density (``_log_density``), the bound and bits/dim, and the
        loss: ``nll`` plus the model's label term (``_label_loss``) if it has one."""
        x, log_q = self._dequantize(x, seed, training, labels)
        log_prob, log_prior, log_det, z = self._log_density(x, labels, training)
        log_q = tf.zeros_like(log_prob) + log_q  # 0 for continuous inputs.
        nll = log_q - log_prob
        num_dims = int(np.prod(self._event_of(x)))
        label_terms = self._label_loss(z, labels, num_dims)
        if label_terms is None:
            classification_nll, loss = tf.zeros_like(nll), nll
        else:
            classification_nll, weighted = label_terms
            loss = nll + weighted
        return Objective(nll=nll, log_prob=log_prob, log_prior=log_prior, log_det=log_det,
                         log_q=log_q, bits_per_dim=bits_per_dim_from_log_prob(-nll, num_dims),
                         classification_nll=classification_nll, loss=loss)

    def _label_loss(self, z: tf.Tensor, labels: tf.Tensor | None, num_dims: int
                    ) -> tuple[tf.Tensor, tf.Tensor] | None:
        """``(classification_nll, its weighted term of the loss)`` of the latents ``z``
        (``_log_density``'s) and their checked ``labels``, per example, in nats
        (``Objective``); ``None``: the model's loss is ``nll``.  ``num_dims``: ``D``."""
        return None

    def _nll(self, x: tf.Tensor, labels: tf.Tensor | None, seed: tf.Tensor | None,
             training: Training) -> tf.Tensor:
        return self._objective(x, labels, seed, training).nll

    @staticmethod
    def _eager_seed(seed, batch_shape: tf.TensorShape | None = None) -> tf.Tensor:
        """``seed`` checked (one per example allowed with a ``batch_shape``,
        ``validation.check_seed``) as a tensor, or (if ``None``) a stateless seed drawn now
        from TensorFlow's global generator (``tf.random.set_seed``): a compiled call
        then draws its noise from it, statelessly, without retracing."""
        seed = validation.check_seed(seed, batch_shape)
        if seed is None:
            return tf.random.uniform([2], maxval=tf.int32.max, dtype=tf.int32)
        return seed

    def _check_nll_inputs(self, x, seed) -> tuple[tf.Tensor, tf.Tensor | None]:
        """``nll``'s input checks: ``(checked inputs, seed)`` (see ``_dequantize``)."""
        return self._check_inputs(x), seed

    def _dequantize(self, x, seed, training: Training | None,
                    labels: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor | float]:
        """``(continuous inputs, log q)`` (of the class ``labels``, checked, for a
        class-conditional model); continuous data pass unchanged with ``log q = 0``."""
        return x, 0.0

    # ------------------------------------------------------------ conditioning
    def _make_class_conditional(self, num_classes: int | None, class_prior: bool = True
                                ) -> None:
        """Makes the model class-conditional (``tfnvp.conditional``) if ``num_classes``:
        labels reach the flow's bijectors as the one-hot ``context``, and with
        ``class_prior`` the base distribution is ``ClassConditionalPrior`` (else
        ``N(0, I)``: the flow's own steps hold the label's prior)."""
        self.num_classes = None if num_classes is None else int(num_classes)
        self._untracked.class_prior = self.num_classes is not None and class_prior
        if self._untracked.class_prior:
            self.prior = ClassConditionalPrior(self.num_classes, self.event_shape,
                                               dtype=self.flow_dtype.name, name="prior")
            self.prior.build((None,))  # Records the labels' shape (summary()).

    def _labels_for(self, t: tf.Tensor, labels, per: str = "input") -> tf.Tensor | None:
        """``_checked_labels`` for the inputs (or latents) ``t``: one label per event."""
        batch = self._batch_of(t)
        size = None if batch.is_fully_defined() else tf.shape(t)[:self._batch_rank(t)]
        return self._checked_labels(self._event_of(t), batch, labels, size, per)

    def _checked_labels(self, event: tuple[int, ...], batch: tf.TensorShape, labels,
                        size: tf.Tensor | None = None, per: str = "input") -> tf.Tensor | None:
        """``labels`` checked for events of shape ``event`` in a batch of shape ``batch``
        (at run time ``size``, checked where ``batch`` is not fully known; ``per``: what
        one label is for, in messages): int32 labels for a class-conditional model,
        ``None`` for an unconditional one."""
        if self.num_classes is None:
            if labels is not None:
                raise ValueError("labels were given, but the model is unconditional "
                                 "(build it with num_classes=K for a class-conditional model).")
            return None
        if labels is None:
            raise ValueError(f"This model is class-conditional (num_classes={self.num_classes}): "
                             "pass labels=.")
        if event != self.event_shape:
            raise ValueError(f"A class-conditional model's prior is defined for events of shape "
                             f"{self.event_shape}, got {event}.")
        return check_labels(labels, self.num_classes, batch, self.validate_args, size, per)

    def _conditioned(self, t: tf.Tensor,
                     labels: tf.Tensor | None) -> tuple[tf.Tensor | None, tfd.Distribution]:
        """``(context, distribution)`` for inputs/latents ``t`` and checked ``labels``."""
        flow = self._flow(self._event_of(t))
        if labels is None:
            return None, flow.distribution
        context = one_hot_context(labels, self.num_classes, self.flow_dtype)
        if not self._untracked.class_prior:
            return context, flow.distribution
        return context, flow.distribution.with_base(self.prior.distribution(labels))

    def regularized_weights(self) -> list[tf.Variable]:
        """The conditioners' weight scales: the gains ``g`` of every ``WeightNormConv2D``,
        and the log-scale factors of the ``ShiftAndLogScale`` heads with ``regularized_scale``.

        A weight-normalized kernel is ``g * v / ||v||`` with ``v`` normalized
        per output filter, so its squared L2 norm is exactly ``sum(g^2)``: an
        L2 penalty on the kernels *is* the paper's "L2 regularization on the
        weight scale parameters" (section 4.1).  The authors' release also
        penalizes its checkerboard couplings' scalar ``s`` scale
        (``rescaling_scale``; Real NVP's ``conditioner_form="release"``).
        Empty for models without such layers.
        """
        weights = []
        for layer in _compat.sublayers(self, include_self=False):
            if isinstance(layer, WeightNormConv2D):
                weights.append(layer.gain)
            elif isinstance(layer, ShiftAndLogScale) and layer.regularized_scale:
                weights.append(layer.scale)
        return weights

    def weight_scale_penalty(self) -> tf.Tensor:
        """``sum g^2`` over ``regularized_weights`` (float32; 0 if there are none).

        Computed as ``2 * sum(l2_loss(g))``: one ``L2Loss`` op per weight (``sum(g^2) / 2``)
        whose gradient is one multiplication, where ``reduce_sum(square(g))`` and its gradient
        take about ten ops per weight (the paper model has 280 such weights).  Halving and
        doubling are exact in binary, so the value and gradient are those of ``sum g^2``."""
        return 2.0 * tf.add_n([tf.zeros([], tf.float32)] + [
            tf.nn.l2_loss(tf.cast(g, tf.float32)) for g in self.regularized_weights()])

    def regularization_loss(self, l2: float = PAPER_L2) -> tf.Tensor:
        """``l2 * weight_scale_penalty()``: the L2 term of the training loss (float32)."""
        return float(l2) * self.weight_scale_penalty()

    def _check_training_batch(self, x: tf.Tensor) -> None:
        """Batch statistics need a batch: one batch axis, not empty (static shapes)."""
        batch = x.shape[:x.shape.rank - len(self.event_shape)]
        if batch.rank != 1 or batch[0] == 0:
            raise ValueError(
                "training=True normalizes with batch statistics and needs a non-empty batch "
                f"of shape [batch, {', '.join(str(d) for d in self.event_shape)}]; got shape "
                f"{x.shape}. Use training=False (running statistics) for single or empty inputs.")

    def encode(self, x: tf.Tensor, labels: tf.Tensor | None = None) -> tf.Tensor:
        """Latent ``z = f(x)`` (``f(x; y)`` with ``labels``) of the input's shape
        (evaluation mode)."""
        x = self._check_inputs(x)
        labels = self._labels_for(x, labels)
        return self._compiled_call("encode", self._encode, self._batch_rank(x), (x, labels))

    def _encode(self, x: tf.Tensor, labels: tf.Tensor | None) -> tf.Tensor:
        context, distribution = self._conditioned(x, labels)
        return distribution.bijector.inverse(x, **self._bijector_kwargs(False, context))

    def decode(self, z: tf.Tensor, labels: tf.Tensor | None = None) -> tf.Tensor:
        """Data ``x = f^-1(z)`` (``f^-1(z; y)`` with ``labels``) from latents (evaluation
        mode), within ``data_support``.

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
        labels = self._labels_for(z, labels, "latent")
        return self._compiled_call("decode", self._decode, self._batch_rank(z), (z, labels))

    def _decode(self, z: tf.Tensor, labels: tf.Tensor | None) -> tf.Tensor:
        context, distribution = self._conditioned(z, labels)
        x = distribution.bijector.forward(z, **self._bijector_kwargs(False, context))
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
               event_shape: Sequence[int] | None = None,
               labels: tf.Tensor | None = None) -> tf.Tensor:
        """``num_samples`` draws decoded from ``z ~ N(0, temperature^2 I)``.

        Class-conditional models take ``labels`` (``[num_samples]``) and draw
        ``z = mu_y + temperature * sigma_y * eps``.  ``seed`` is a stateless
        seed (an int ``s``, meaning ``[s, 0]``, a pair of ints or a shape-[2]
        tensor); without one, an eager
        call draws one from TensorFlow's global generator (so
        ``tf.random.set_seed`` makes it repeatable).  Values lie in
        ``data_support`` (see ``decode``).  Inside a ``tf.function`` whose
        ``num_samples``, ``temperature`` or labels are tensors of unknown value
        (an export's inputs), ``validate_args`` checks them at run time: a
        non-negative count, a finite non-negative temperature, one label per sample.
        """
        static_temperature = tf.get_static_value(temperature)
        if static_temperature is not None and not np.all(
                np.isfinite(static_temperature) & (np.asarray(static_temperature) >= 0)):
            raise ValueError(f"temperature must be a finite non-negative number (z ~ N(0, "
                             f"temperature^2 I)), got {temperature}.")
        event = tuple(int(d) for d in (event_shape or self.event_shape))
        self._flow(event)  # Checks the event shape.
        if not tf.is_tensor(num_samples):
            num_samples = int(num_samples)
            if num_samples < 0:
                raise ValueError(f"num_samples must be non-negative, got {num_samples}.")
        static_count = tf.get_static_value(num_samples)
        checks = []  # Values known only at run time (a traced or exported function's inputs).
        if self.validate_args and static_count is None:
            checks.append(validation.require(
                num_samples >= 0, "num_samples: expected a non-negative count, got {}",
                num_samples))
        if self.validate_args and static_temperature is None:
            checks.append(validation.require(
                tf.math.is_finite(temperature) & (temperature >= 0),
                "temperature: expected a finite non-negative number, got {}", temperature))
        with tf.control_dependencies(checks):  # Before the labels' count is checked.
            if checks and static_count is None:
                num_samples = tf.identity(num_samples)
            if checks and static_temperature is None:
                temperature = tf.identity(temperature)
            labels = self._checked_labels(
                event, tf.TensorShape([static_count]), labels,
                None if static_count is not None else tf.reshape(num_samples, [1]), "sample")
        if tf.inside_function():
            seed = validation.check_seed(seed)
            if tf.is_tensor(temperature):  # E.g. an export's float32 input.
                temperature = tf.cast(temperature, self.flow_dtype)
        else:
            # Tensors, so that a new count, temperature or seed does not retrace.
            num_samples = tf.convert_to_tensor(num_samples, tf.int32)
            temperature = tf.cast(temperature, self.flow_dtype)
            seed = self._eager_seed(seed)
        return self._compiled_call("sample", self._sample, 1, (labels,),
                                   (num_samples, temperature, seed), event=event)

    def _sample(self, labels: tf.Tensor | None, num_samples: tf.Tensor | int,
                temperature: tf.Tensor | float, seed: tf.Tensor | None,
                event: tuple[int, ...]) -> tf.Tensor:
        shape = (num_samples,) + event
        if seed is None:
            z = tf.random.normal(shape, dtype=self.flow_dtype)
        else:
            z = tf.random.stateless_normal(shape, seed=seed, dtype=self.flow_dtype)
        z = temperature * z
        if labels is not None and self._untracked.class_prior:
            loc, scale = self.prior.parameters_of(labels)
            z = loc + scale * z
        return self._decode(z, labels)

    # ------------------------------------------------------------ statistics
    def batch_norm_layers(self) -> list[keras.layers.Layer]:
        """Every layer holding batch-norm statistics: the ``BatchNorm`` bijectors'
        ``BatchNormStatistics`` and the conditioners' ``BatchNormalization``."""
        return [layer for layer in _compat.sublayers(self, include_self=False)
                if isinstance(layer, (BatchNormStatistics, BatchNormalization))]

    def recalibrate(self, dataset: Iterable, num_batches: int) -> int:
        """Recomputes every batch-norm statistic over ``num_batches`` training batches.

        Returns the number of batches used (fewer if ``dataset`` runs out).
        Running averages lag a network that is still changing; evaluation,
        sampling and export should use statistics of the current network.
        This pass resets every layer's update counter and runs the batches
        through the flow once each (a compiled ``log_prob``; nothing trainable
        changes) in the cumulative mode of ``tfnvp.running_average``
        (``training=RECALIBRATE``): each batch normalization ``k`` updates

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

        ``dataset`` yields batches (``unpack_batch``): model inputs, ``(inputs,
        labels)`` for a class-conditional model, or a dict with their ``seed`` (e.g.
        the trainer's training pipeline: augmented uint8 images and a seed per
        image); uint8 images are dequantized by the model's dequantizer, in
        evaluation mode, from the seed if there is one.  Under
        ``tf.distribute`` call it in cross-replica context (inside
        ``strategy.scope()``): every replica's copy gets the same statistics.
        """
        if int(num_batches) < 1:
            raise ValueError(f"num_batches must be >= 1, got {num_batches!r}.")
        if self._untracked.recalibration_step is None:
            self._untracked.recalibration_step = tf.function(
                lambda x, labels=None, seed=None: self.log_prob(
                    self._dequantize(x, seed, False, labels)[0], training=RECALIBRATE,
                    labels=labels),
                reduce_retracing=True, autograph=False)
        used = 0
        for batch in dataset:
            x, labels, seed = unpack_batch(batch)
            if used == 0:
                x = tf.convert_to_tensor(x)
                self._labels_for(x, labels)
                if not all(layer.built for layer in self.batch_norm_layers()):
                    self.log_prob(self._dequantize(x, None, False, labels)[0],
                                  labels=labels)  # Builds the conditioners.
                for layer in self.batch_norm_layers():
                    layer.num_updates.assign(0.0)
            self._untracked.recalibration_step(x, labels, seed)
            used += 1
            if used == int(num_batches):
                break
        if used == 0:
            raise ValueError("recalibrate: the dataset yielded no batch.")
        return used

    def num_dims(self) -> int:
        """Dimensions ``D`` of one event at the model's own size."""
        return int(np.prod(self.event_shape))

    # ------------------------------------------------------------------ Keras
    def _build_weights(self, x: tf.Tensor, labels: tf.Tensor | None = None) -> None:
        """Creates every weight with one evaluation-mode ``log_prob(x)`` (no statistic
        updated, no actnorm initialized) and marks the model built, so that
        ``count_params``, ``summary`` and ``load_weights`` work on a fresh model."""
        self._build_step_layers()
        self.log_prob(x, labels=labels)
        self.built = True
        for flow in self._flows.values():
            self._expose_variables(flow)

    def _build_step_layers(self) -> None:
        """Builds every step's layers on the shape of the tensor the step transforms.

        That shape is ``(None, *spatial / 2**depth, channels)`` at the step's
        ``multiscale.Position`` (``(None, channels)`` for vectors), with a
        class-conditional model's context ``(None, K)``.  The conditioners create
        their weights, in step order as the first ``log_prob`` would; the other
        layers' weights exist and their ``build`` only checks the shape.  Keras
        records the shapes, so that ``summary()`` shows every layer's output shape
        (its ``compute_output_shape``) with ``None`` for the batch axis.
        """
        engine = self._untracked
        context = {} if self.num_classes is None else {"context_shape": (None, self.num_classes)}
        steps = multiscale.walk(engine.scales, engine.channels)
        for (_, position), layers in zip(steps, engine.step_layers):
            spatial = tuple(d // 2 ** position.depth for d in self.event_shape[:-1])
            shape = (None, *spatial, position.channels)
            for role, layer in layers.items():
                if role == "conditioner":
                    layer.build(shape, **context)
                else:
                    layer.build(shape)
