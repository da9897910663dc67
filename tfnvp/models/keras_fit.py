"""Keras' ``fit`` and ``evaluate`` for tfnvp's flow models, and the batches they read.

``KerasFit`` is the part of ``tfnvp.models.flow_model.FlowModel`` that follows
Keras' training conventions (as Keras' own ``Model`` takes its ``fit`` from a
trainer class): ``fit`` and ``evaluate`` by maximum likelihood, their steps
(``train_step``/``test_step``) minimizing the model's own objective,

    loss = mean(objective.loss) + regularization_loss()   (objective.loss: nll = -log p(x) + log q(u | x),
                                                           plus Glow's release classification term)

(``FlowModel.objective``, ``Objective``; the paper's L2 term, section 4.1), its bits/dim as a
metric, ``compile`` with the fused Adam and loss scaling for float16
conditioners.  ``unpack_batch`` reads the forms a batch takes, here, in
``FlowModel.recalibrate`` and in the trainers.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnvp import _compat, graph_optimization
from tfnvp.models.objective import Objective
from tfnvp.optimizers.fused_adam import FusedAdam

__all__ = ["BATCH_KEYS", "KerasFit", "unpack_batch"]

#: The keys of a batch given as a dict (``unpack_batch``): ``objective``'s arguments.
BATCH_KEYS = ("x", "labels", "seed")


def unpack_batch(batch) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor | None]:
    """``(x, labels, seed)`` of a batch a model trains or evaluates on.

    A batch (a dataset's element for ``fit``, ``evaluate`` and ``recalibrate``,
    and the trainers' steps and evaluator) is the inputs ``x``, ``(x, labels)``
    for a class-conditional model, or a dict of ``objective``'s arguments,
    ``{"x": ..., "labels": ..., "seed": ...}`` (``BATCH_KEYS``; labels and seed
    optional): the trainers' input pipelines yield uint8 images with one stateless
    seed per image (``[batch, 2]``), from which the model's dequantizer draws the
    image's noise.  Absent parts are ``None``; sample weights are refused (a flow
    is fit by maximum likelihood, every example counted once).
    """
    if isinstance(batch, dict):
        unknown = sorted(set(batch) - set(BATCH_KEYS))
        if unknown or "x" not in batch:
            raise ValueError(f"A batch given as a dict holds 'x' and optionally 'labels' and "
                             f"'seed' (objective's arguments); got the keys {sorted(batch)}.")
        return batch["x"], batch.get("labels"), batch.get("seed")
    x, labels, sample_weight = keras.utils.unpack_x_y_sample_weight(batch)
    if sample_weight is not None:
        raise ValueError("tfnvp models are trained by maximum likelihood: sample weights "
                         "are not supported (the dataset yields inputs, (inputs, labels) or "
                         "a dict with 'x', 'labels' and 'seed').")
    return x, labels, None


def _refuse_weights(method: str, **weights) -> None:
    """``ValueError`` naming the first of ``weights`` (``sample_weight``, ``class_weight``)
    that is given: a flow is fit by maximum likelihood, every example counted once."""
    for name, value in weights.items():
        if value is not None:
            raise ValueError(
                f"{method}({name}=...): tfnvp models are trained by maximum likelihood, every "
                f"example counted once; {name} is not supported (got a {type(value).__name__}). "
                "Leave it unset (repeat examples in the dataset to weigh them).")


class KerasFit:
    """``fit``, ``evaluate``, ``compile`` and their steps: a base of ``FlowModel``,
    listed before ``keras.Model``.  The steps call the model's ``objective`` and
    ``regularization_loss``; the ``bits_per_dim`` metric is kept in its untracked state."""

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """Keras' ``loss`` tracker (once compiled) and ``bits_per_dim``: what ``fit`` and
        ``evaluate`` report (validation: ``val_loss``, ``val_bits_per_dim``).  Keras'
        callbacks cannot tell that lower bits/dim is better: monitor it with
        ``mode="min"`` (``EarlyStopping``, ``ModelCheckpoint(save_best_only=True)``)."""
        return super().metrics + [self._untracked.bits_per_dim]

    def fit(self, x=None, y=None, *args, sample_weight=None, class_weight=None, **kwargs):
        """Keras' ``fit`` (see ``train_step``); ``y`` holds the labels of a
        class-conditional model.  ``sample_weight`` and ``class_weight`` are refused:
        Keras would drop them silently for inputs without targets.  Its steps are optimized
        with ``tfnvp.graph_optimization``'s rewrites."""
        _refuse_weights("fit", sample_weight=sample_weight, class_weight=class_weight)
        with graph_optimization.first_call_rewrites():
            return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, sample_weight=None, **kwargs):
        """Keras' ``evaluate`` (see ``test_step``); ``sample_weight`` is refused, as in ``fit``."""
        _refuse_weights("evaluate", sample_weight=sample_weight)
        with graph_optimization.first_call_rewrites():
            return super().evaluate(x, y, *args, **kwargs)

    def _fit_loss(self, data, training: bool) -> tuple[tf.Tensor, Objective]:
        """``(loss, objective)`` of a batch (``unpack_batch``): ``loss = mean(objective.loss)
        + regularization_loss()`` (``Objective``: ``objective.loss`` is ``nll`` but for
        Glow's release classification loss)."""
        x, labels, seed = unpack_batch(data)
        objective = self.objective(x, training=training, seed=seed, labels=labels)
        loss = tf.reduce_mean(objective.loss) + tf.cast(self.regularization_loss(),
                                                        objective.loss.dtype)
        return loss, objective

    def compile(self, optimizer: str | keras.optimizers.Optimizer = "rmsprop", *args,
                **kwargs) -> None:
        """Keras' ``compile``, then the optimizer's variables built for the trainable weights.

        ``optimizer="adam"`` (the string) gives ``tfnvp.FusedAdam()``: Keras' ``Adam``
        with its defaults, one fused kernel per weight (a first ``fit`` step in less than
        half the time, docs/performance.md); an optimizer object is used as it is.

        Keras otherwise creates them inside ``fit``'s first step, and a
        ``tf.function`` that creates variables on its first call is traced
        twice: the paper CIFAR-10 model's first ``fit`` step took about twice
        as long and held both traces' graphs (docs/performance.md).  A
        model whose conditioners compute in float16 gets its optimizer wrapped
        in a ``keras.optimizers.LossScaleOptimizer``, as Keras does for
        ``"mixed_float16"`` models.
        """
        if isinstance(optimizer, str) and optimizer.lower() == "adam":
            optimizer = FusedAdam()
        super().compile(optimizer, *args, **kwargs)
        if (self.optimizer is not None and self._computes_in_float16()
                and not isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)):
            # What Keras does for a "mixed_float16" model: dynamic loss scaling.
            self.optimizer = keras.optimizers.LossScaleOptimizer(self.optimizer)
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

    def _computes_in_float16(self) -> bool:
        """Whether any layer (a conditioner with ``conditioner_dtype="mixed_float16"``)
        computes in float16, whose gradients need loss scaling."""
        return any(layer.compute_dtype == "float16"
                   for layer in _compat.sublayers(self, include_self=False))

    def compile_from_config(self, config: dict) -> None:
        """Keras' loading of a compiled model: ``compile(**config)``.

        ``config`` is ``get_compile_config()`` of the saved model (Keras' own,
        which records ``compile``'s arguments).  Keras skips models whose
        ``compile`` is overridden; this one builds the optimizer's variables,
        so that ``keras.models.load_model`` then restores their saved values
        (the iteration count, Adam's moments) and ``fit`` continues where the
        saved model stopped.
        """
        self.compile(**keras.saving.deserialize_keras_object(config))

    # Keras traces fit's and evaluate's steps with AutoGraph; they have no tensor-dependent
    # Python control flow, and converting the whole flow's code only costs tracing time.
    @tf.autograph.experimental.do_not_convert
    def train_step(self, data) -> dict[str, tf.Tensor]:
        """``fit``'s step: maximum likelihood with the compiled optimizer.

        Minimizes ``mean(objective(x, training=True).loss) + regularization_loss()``
        (the paper's objective, as the trainer does; ``loss`` is ``nll`` but for Glow's
        release classification loss): batch statistics, updated
        running averages, data-dependent actnorm initialization on the first
        batch, and 8-bit images dequantized by the model's dequantizer (from the
        batch's ``seed`` if it has one, ``unpack_batch``; float inputs are taken
        as already dequantized), float16 conditioners with dynamic loss scaling.
        ``loss`` is that objective;
        ``bits_per_dim`` is ``nll / (D ln 2)`` without the L2 term.
        """
        with tf.GradientTape() as tape:
            loss, objective = self._fit_loss(data, training=True)
            # The loss scale of a LossScaleOptimizer (float16 conditioners; see compile),
            # whose apply() unscales the gradients; other optimizers return the loss.
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        return self._update_metrics(loss, objective)

    @tf.autograph.experimental.do_not_convert
    def test_step(self, data) -> dict[str, tf.Tensor]:
        """``evaluate``'s (and ``fit``'s validation) step: the objective in evaluation
        mode (running batch-norm statistics)."""
        return self._update_metrics(*self._fit_loss(data, training=False))

    def _update_metrics(self, loss: tf.Tensor, objective: Objective) -> dict[str, tf.Tensor]:
        if self._loss_tracker is not None:
            self._loss_tracker.update_state(loss, sample_weight=tf.shape(objective.nll)[0])
        self._untracked.bits_per_dim.update_state(objective.bits_per_dim)
        return self.get_metrics_result()
