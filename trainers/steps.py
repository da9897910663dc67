"""The compiled training and diagnostic steps of Real NVP under ``tf.distribute``.

One training step, for a global batch of ``B`` images split across ``R`` replicas:

1. each replica computes, in training mode (batch-norm bijectors normalize with
   the statistics of the *global* batch, all-reduced across replicas), the
   model's objective ``loss_r = sum(loss_i)/B + l2 * model.weight_scale_penalty()
   / R`` (``loss_i``: ``model.objective(x_i, seed=seed_i).loss``, the nll of the
   uint8 image dequantized by the model from its seed, plus Glow's release
   classification term if the model has one, ``tfnvp.Objective``;
   ``FlowModel.regularization_loss``) and its gradients (a class-conditional
   model's batches hold labels too and ``nll_i`` is ``-log p(x_i | y_i)``); the
   step reports the nll's mean (bits/dim: the likelihood's);
2. the gradients (and the loss) are summed across replicas **once, here**, so
   that gradient-norm clipping and the finiteness check see the global
   gradient and take the same decision on every replica;
3. if the loss and every gradient are finite, the clipped gradients are applied
   by an optimizer that does not all-reduce them again (``pre_reduced``), which
   also updates the Polyak averages of the weights if it keeps them
   (``make_optimizer(polyak_decay=)``); otherwise nothing is applied (the
   averages do not move either), the batch-norm running statistics that the
   forward pass updated are put back, and the step reports ``applied=False``.
   With ``FusedAdam`` (``make_optimizer``'s) every update runs and a skipped
   one changes nothing (``FusedAdam.apply_if``: no ``tf.cond``, whose branches
   would capture every variable and slot, a third of the step's graph); with
   any other optimizer the decision is a ``tf.cond`` in cross-replica context
   (Keras optimizers call ``merge_call``, which a ``cond`` branch in replica
   context may not).

With ``mixed_precision="float16"`` the optimizer is a ``LossScaleOptimizer``,
which skips non-finite updates itself (and lowers its loss scale); the step
then always hands it the gradients.

Batches are those of ``trainers/data.py`` (``{"x": uint8 images, "seed": one
seed per image, "labels"}``) or any other form a model trains on
(``tfnvp.models.keras_fit.unpack_batch``: e.g. float images taken as
dequantized).  Steps are ``tf.function``s with fixed input signatures (the
distributed iterator's ``element_spec``), so they trace once.
"""

from __future__ import annotations

import functools
import math

import keras
import tensorflow as tf

import tfnvp
from tfnvp import FusedAdam, GlowAdamax, _compat, graph_optimization
from tfnvp.models.keras_fit import unpack_batch

__all__ = ["OPTIMIZERS", "pre_reduced", "make_optimizer", "TrainSteps"]

#: The trainer's optimizers (``--optimizer``): Keras' Adam (as ``FusedAdam``), and the
#: Adamax of Glow's release (``GlowAdamax``).
OPTIMIZERS = {"adam": FusedAdam, "adamax": GlowAdamax}


@functools.cache
def pre_reduced(optimizer_class: type) -> type:
    """``optimizer_class`` for gradients that are already summed across replicas.

    Keras' TensorFlow optimizers all-reduce (sum) gradients when applied in a
    replica context.  The training step sums them itself, before clipping and
    the finiteness check, so that sum must not happen twice.
    """
    _compat.check_gradient_all_reduce_hook()  # Keras' own all-reduce, overridden below.

    class PreReduced(optimizer_class):
        def _all_reduce_sum_gradients(self, grads_and_vars):
            return list(grads_and_vars)

    PreReduced.__name__ = PreReduced.__qualname__ = f"PreReduced{optimizer_class.__name__}"
    return PreReduced


def make_optimizer(learning_rate: float, mixed_precision: str = "none",
                   warmup_steps: int = 0, polyak_decay: float = 0.0, optimizer: str = "adam",
                   adamax_beta2: float = 0.999) -> keras.optimizers.Optimizer:
    """Adam (Keras defaults but ``learning_rate``; ``FusedAdam``: one fused kernel
    per variable), or with ``optimizer="adamax"`` the Adamax of Glow's release
    (``GlowAdamax``: ``beta_1 = 0.9``, ``beta_2 = adamax_beta2``, ``epsilon = 1e-8``),
    loss-scaled for float16.

    ``warmup_steps > 0``: the learning rate of update ``t`` (0-based, the
    optimizer's ``iterations``, checkpointed, so a resumed run continues the
    ramp) is ``learning_rate * min(1, t / warmup_steps)``, Flow++'s linear
    warm-up (``keras.optimizers.schedules.CosineDecay`` with ``alpha=1``: no decay).

    ``polyak_decay > 0``: the optimizer also keeps Polyak averages of the
    weights (Keras' ``use_ema``, ``ema_momentum=polyak_decay``), updated by
    every applied update and only by those (``trainers/polyak.py``).
    """
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}.")
    if not 0.0 <= polyak_decay < 1.0:
        raise ValueError(f"polyak_decay must be in [0, 1) (0: no Polyak averaging), "
                         f"got {polyak_decay}.")
    if warmup_steps:
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=1, alpha=1.0, warmup_target=learning_rate,
            warmup_steps=warmup_steps)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}.")
    options = dict(beta_2=adamax_beta2) if optimizer == "adamax" else {}
    result = pre_reduced(OPTIMIZERS[optimizer])(
        learning_rate=learning_rate, use_ema=polyak_decay > 0, ema_momentum=polyak_decay,
        **options)
    if mixed_precision == "float16":
        result = keras.optimizers.LossScaleOptimizer(result)
    return result


def _local(strategy: tf.distribute.Strategy, value):
    """The first local replica's copy of a value that is identical on all replicas."""
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], value)


class TrainSteps:
    """Compiled steps for one model, optimizer and strategy.

    Args:
      model: a ``RealNVP`` created under ``strategy.scope()``.
      optimizer: from ``make_optimizer`` (or any ``pre_reduced`` optimizer).
      strategy: the distribution strategy.
      element_spec: the distributed training iterator's ``element_spec`` (a batch as
        ``unpack_batch`` reads it; the trainer's: ``{"x", "seed"}`` and ``"labels"`` for a
        class-conditional model).
      global_batch_size: images per step over all replicas.
      l2: coefficient of the model's ``weight_scale_penalty`` (``regularization_loss``).
      clip_grad_norm: clip the global gradient norm to this (None: no clipping).
      jit_compile: XLA-compile the forward and backward pass; needs a
        ``OneDeviceStrategy`` (or none): under mirrored strategies the batch-norm
        statistics are mirrored variables whose updates synchronize replicas,
        which a nested compiled function cannot do.
    """

    def __init__(self, model: tfnvp.RealNVP, optimizer, strategy: tf.distribute.Strategy,
                 element_spec, global_batch_size: int, l2: float = 0.0,
                 clip_grad_norm: float | None = None, jit_compile: bool = False):
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.global_batch_size = int(global_batch_size)
        self.l2 = float(l2)
        self.clip_grad_norm = clip_grad_norm
        self.num_dims = int(math.prod(model.image_shape))
        self.num_replicas = strategy.num_replicas_in_sync
        self.loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        self.masked_apply = isinstance(optimizer, FusedAdam) and not optimizer.amsgrad
        if jit_compile and not isinstance(
                strategy, (tf.distribute.OneDeviceStrategy, type(tf.distribute.get_strategy()))):
            raise tfnvp.UsageError("--jit_compile needs --strategy=one_device (what --strategy=auto "
                             "picks on one machine with --jit_compile): the batch-norm updates of "
                             "mirrored strategies cannot be compiled.")
        self._variables = list(model.trainable_variables)
        with strategy.scope():
            if not optimizer.built:
                optimizer.build(self._variables)
        forward_backward = self._forward_backward
        if jit_compile:
            forward_backward = tf.function(forward_backward, jit_compile=True)
        self._compute = forward_backward
        self.train_step = tf.function(self._train_step, input_signature=[element_spec], autograph=False)
        # Traced for one replica's share of the training batches (diagnose).
        self.diagnostics = tf.function(self._diagnostics, autograph=False, reduce_retracing=True)

    # ------------------------------------------------------------- training
    def _forward_backward(self, x: tf.Tensor, labels: tf.Tensor | None = None,
                          seed: tf.Tensor | None = None):
        """One replica's share: (nll share, penalty share, gradients)."""
        with tf.GradientTape() as tape:
            objective = self.model.objective(x, training=True, labels=labels, seed=seed)
            nll = tf.reduce_sum(tf.cast(objective.nll, tf.float32)) / self.global_batch_size
            penalty = (self.model.weight_scale_penalty() / self.num_replicas if self.l2
                       else tf.zeros([], tf.float32))
            # objective.loss is objective.nll (the same tensor) unless the model adds a term.
            data_loss = (nll if objective.loss is objective.nll else
                         tf.reduce_sum(tf.cast(objective.loss, tf.float32)) / self.global_batch_size)
            loss = data_loss + self.l2 * penalty
            if self.loss_scaled:
                loss = self.optimizer.scale_loss(loss)
        grads = tape.gradient(loss, self._variables)
        missing = [v.path for v, g in zip(self._variables, grads) if g is None]
        if missing:
            raise ValueError(f"No gradient for trainable variables {missing}.")
        return nll, penalty, grads

    def _replica_step(self, batch):
        nll, penalty, grads = self._compute(*unpack_batch(batch))
        ctx = tf.distribute.get_replica_context()
        if self.num_replicas > 1:
            nll, penalty, *grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, [nll, penalty, *grads])
        grad_norm = tf.linalg.global_norm(grads)
        if self.loss_scaled:  # Report and clip the norm of the true gradient.
            grad_norm = grad_norm / tf.cast(self.optimizer.dynamic_scale, grad_norm.dtype)
        finite = tf.logical_and(tf.math.is_finite(nll), tf.math.is_finite(grad_norm))
        factor = None
        if self.clip_grad_norm:
            factor = tf.minimum(1.0, self.clip_grad_norm / tf.maximum(grad_norm, 1e-12))
            if not self.masked_apply:  # FusedAdam.apply_if scales where it masks: one op.
                grads = [g * tf.cast(factor, g.dtype) for g in grads]
                factor = None
        return dict(nll=nll, penalty=penalty, grad_norm=grad_norm, finite=finite), grads, factor

    def _apply(self, grads, applies=None, factor=None):
        if applies is None:
            self.optimizer.apply(grads, self._variables)
        else:
            self.optimizer.apply_if(applies, grads, self._variables, grad_scale=factor)

    def _train_step(self, batch):
        """Returns (identical on every replica) nll, bits_per_dim, l2 penalty,
        grad_norm (before clipping) and whether the update was applied."""
        strategy = self.strategy
        statistics = self.model.non_trainable_variables
        saved = [tf.identity(v.value) for v in statistics]
        # Each replica's thread with this one's graph settings (tfnvp.graph_optimization).
        replica_step, apply = map(graph_optimization.carried, (self._replica_step, self._apply))
        stats, grads, factor = strategy.run(replica_step, args=(batch,))
        stats = _local(strategy, stats)
        finite = stats["finite"]
        if self.loss_scaled:
            strategy.run(apply, args=(grads,))
        elif self.masked_apply:  # The same decision, without a tf.cond (FusedAdam.apply_if).
            strategy.run(apply, args=(grads, finite, factor))
            for variable, value in zip(statistics, saved):
                variable.assign(tf.where(finite, variable.value, value))
        else:
            def applied():
                strategy.run(apply, args=(grads,))
                return tf.constant(True)

            def skip():
                for variable, value in zip(statistics, saved):
                    variable.assign(value)
                return tf.constant(False)

            tf.cond(finite, applied, skip)
        return dict(nll=stats["nll"],
                    bits_per_dim=tfnvp.bits_per_dim_from_log_prob(-stats["nll"], self.num_dims),
                    l2_penalty=stats["penalty"], grad_norm=stats["grad_norm"], applied=finite)

    # ---------------------------------------------------------- diagnostics
    def diagnose(self, batch) -> dict:
        """``diagnostics`` of the first local replica's share of a distributed batch."""
        return self.diagnostics(_local(self.strategy, batch))

    def _diagnostics(self, batch):
        """Evaluation-mode split of bits/dim into the prior and log-det terms.

        ``-log p(x) = -log p_Z(z) - log|det dz/dx|`` (``model.objective``'s
        ``log_prior`` and ``log_det``; ``p_Z(z | y)`` for a class-conditional
        model), both per dimension in bits, averaged over the batch:
        ``bits_per_dim = prior + log_det``.  uint8 images are dequantized by the
        model in evaluation mode from the batch's seeds (as in training), and the
        split is that of ``-log p(x + u)`` (without ``log q(u | x)``).
        """
        x, labels, seed = unpack_batch(batch)
        objective = self.model.objective(x, training=False, seed=seed, labels=labels)
        prior_bits, log_det_bits = (
            tf.reduce_mean(tf.cast(tfnvp.bits_per_dim_from_log_prob(term, self.num_dims),
                                   tf.float32))
            for term in (objective.log_prior, objective.log_det))
        return dict(prior_bits_per_dim=prior_bits, log_det_bits_per_dim=log_det_bits,
                    bits_per_dim=prior_bits + log_det_bits)
