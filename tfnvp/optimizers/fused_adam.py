"""Adam whose per-variable update is one fused kernel: ``tfnvp.FusedAdam``.

Keras 3's ``Adam.update_step`` builds about 36 graph operations per variable
(casts, the bias-correction powers recomputed for every variable, the moment
updates and the parameter update, each a separate op).  The paper's CIFAR-10
model has about 1,160 trainable variables, so the optimizer alone put 41,760 of
the training step's 68,349 nodes in the graph, and tracing and optimizing that
graph dominated the time to the first training step.

``FusedAdam`` computes the step's shared scalars once and updates each variable
with TensorFlow's ``ResourceApplyAdam`` kernel, which implements exactly Keras'
formula (Kingma & Ba, 2015, Algorithm 1 with the bias correction folded into the
step size, as Keras does)::

    alpha_t = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
    m <- m + (g - m) * (1 - beta_1)
    v <- v + (g^2 - v) * (1 - beta_2)
    theta <- theta - alpha_t * m / (sqrt(v) + epsilon)

with ``t = iterations + 1``.  Slots, configuration, serialization and
checkpoints are those of ``keras.optimizers.Adam``: a checkpoint written with
one restores into the other.  ``amsgrad`` falls back to Keras' update.

Use it wherever ``keras.optimizers.Adam`` goes (``model.compile(optimizer=
tfnvp.FusedAdam(1e-3))``, a ``tf.function`` training loop): the small CIFAR-10
configuration's first ``fit`` step costs about 8 CPU-seconds with it against about
19 with Keras' Adam (docs/performance.md, issue 27); later steps run at the same
speed.  The trainer uses it (``trainers/steps.py``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnvp import _compat

__all__ = ["FusedAdam"]


@keras.saving.register_keras_serializable(package="tfnvp")
class FusedAdam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with one ``ResourceApplyAdam`` op per variable."""

    _applies: tf.Tensor | None = None  # Set while ``apply_if`` runs.

    def apply_if(self, applies: tf.Tensor, grads: list, trainable_variables: list,
                 grad_scale: tf.Tensor | None = None) -> None:
        """``apply(grads, trainable_variables)`` where ``applies`` is true; otherwise nothing:
        weights, moments, Polyak averages and ``iterations`` keep their values.
        ``grad_scale`` (a float32 scalar, e.g. a norm clipping's factor): apply
        ``grad_scale * grads`` instead, scaled in the op that zeroes a skipped gradient
        (``multiply_no_nan(g, applies ? grad_scale : 0)``, the same values as scaling first).

        Without a ``tf.cond`` (whose two branches would each hold every variable and
        slot as captured inputs: about a third of the trainer's step graph, traced and
        optimized before its first step, issue 27).  Every variable's fused update runs,
        for a skipped step with a zero gradient (``multiply_no_nan``: a non-finite
        gradient times 0 is 0), ``beta_1 = beta_2 = 1`` and step size 0, which leaves
        every value as it was::

            m <- m + (0 - m) * (1 - 1) = m,   v <- v + (0 - v) * (1 - 1) = v,
            theta <- theta - 0 * m / (sqrt(v) + epsilon) = theta

        (``m`` and ``v`` are finite: a skipped gradient never reached them).  An applied
        step computes exactly what ``apply`` computes.  Polyak averages move with momentum
        1 on a skipped step, and ``iterations`` advances by ``applies``.
        """
        if self.amsgrad:
            raise ValueError("FusedAdam.apply_if needs amsgrad=False (AMSGrad's maximum "
                             "would move on a skipped step); use a tf.cond around apply.")
        factor = (tf.cast(applies, tf.float32) if grad_scale is None
                  else tf.where(applies, tf.cast(grad_scale, tf.float32), 0.0))
        keep = {dtype: tf.cast(factor, dtype) for dtype in dict.fromkeys(g.dtype for g in grads)}
        grads = [tf.math.multiply_no_nan(g, keep[g.dtype]) for g in grads]  # One cast per dtype.
        self._applies = applies
        try:
            self.apply(grads, trainable_variables)
        finally:
            self._applies = None
        self.iterations.assign_add(tf.cast(applies, self.iterations.dtype) - 1)

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if self.amsgrad:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        variables = [v.value if isinstance(v, keras.Variable) else v
                     for v in trainable_variables]
        grads_and_vars = self._all_reduce_sum_gradients(list(zip(grads, variables)))
        _compat.maybe_merge_call(
            self._fused_update, self._distribution_strategy, grads_and_vars, learning_rate)

    def _fused_update(self, distribution, grads_and_vars, learning_rate) -> None:
        step = tf.cast(self.iterations + 1, tf.float32)
        scalars = {}  # Per variable dtype: (lr, beta_1^t, beta_2^t, beta_1, beta_2, epsilon).

        def scalars_for(dtype: tf.DType) -> tuple:
            if dtype not in scalars:
                lr, beta_1, beta_2 = learning_rate, self.beta_1, self.beta_2
                if self._applies is not None:  # apply_if: a skipped step changes nothing.
                    lr, beta_1, beta_2 = (tf.where(self._applies, tf.cast(value, tf.float32), skip)
                                          for value, skip in ((lr, 0.0), (beta_1, 1.0),
                                                              (beta_2, 1.0)))
                scalars[dtype] = tuple(tf.cast(s, dtype) for s in (
                    lr, tf.pow(tf.cast(self.beta_1, tf.float32), step),
                    tf.pow(tf.cast(self.beta_2, tf.float32), step),
                    beta_1, beta_2, self.epsilon))
            return scalars[dtype]

        for grad, var in grads_and_vars:
            distribution.extended.update(
                var, self._apply_one, args=(grad, scalars_for(var.dtype.base_dtype)),
                group=False)

    def _apply_one(self, variable, gradient, scalars):
        lr, beta_1_power, beta_2_power, beta_1, beta_2, epsilon = scalars
        index = self._get_variable_index(variable)
        return tf.raw_ops.ResourceApplyAdam(
            var=variable.handle, m=self._momentums[index].value.handle,
            v=self._velocities[index].value.handle, beta1_power=beta_1_power,
            beta2_power=beta_2_power, lr=lr, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
            grad=tf.cast(gradient, variable.dtype))

    def _update_model_variables_moving_average(self, trainable_variables) -> None:
        """Keras' Polyak update ``a <- mu * a + (1 - mu) * w`` (``mu = 0`` on the first
        update, ``ema_momentum`` after), with ``mu = 1`` on a step ``apply_if`` skips."""
        if self._applies is None:
            return super()._update_model_variables_moving_average(trainable_variables)
        momenta = {}
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is None:
                continue
            dtype = var.dtype
            if dtype not in momenta:
                momenta[dtype] = tf.where(
                    self._applies,
                    tf.cast(tf.not_equal(self.iterations, 0), dtype) * self.ema_momentum,
                    tf.ones([], dtype))
            momentum = momenta[dtype]
            average.assign(momentum * average + (1 - momentum) * var)
        return None
