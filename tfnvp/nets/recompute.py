"""Gradients that recompute activations instead of storing them.

Backpropagation keeps, until the backward pass needs them, the inputs of
every operation whose gradient reads its inputs.  ``recompute(fn, x,
training)`` keeps only ``x``: the forward pass runs ``fn`` unrecorded, and the
backward pass runs it again on ``x`` under a tape (the ``tf.recompute_grad``
scheme; Chen et al. 2016, "Training deep nets with sublinear memory cost").
tfnvp uses it at two granularities:

* a whole conditioner body, with ``recompute_gradients=True``
  (``tfnvp.nets.shift_and_log_scale.body_features``): activation memory of
  one conditioner instead of all of them, for one more forward pass of each
  conditioner (about +1/3 of a training step's FLOPs);
* each ``conv(relu(bn(x)))`` unit of the ResNet conditioners, always in
  training mode (``tfnvp.nets.resnet.normalized_conv``): the unit keeps ``x``
  only, not also ``relu(bn(x))``, and its backward pass recomputes
  ``relu(bn(x))`` -- element-wise passes, no convolution (the recomputed
  convolution's output is not read by its gradient, so the compiled function
  drops it).  As in memory-efficient DenseNets (Pleiss et al. 2017) and
  In-Place ABN (Rota Bulo et al. 2018).

The recomputation repeats a training-mode forward pass, so it must be
deterministic: batch norms are recomputed with the same batch statistics
and do not update their moving averages a second time (the recomputation
runs in mode ``tfnvp.running_average.RECOMPUTE``), and a body with dropout
is refused (``check_recomputable``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import keras
import tensorflow as tf
from tfnvp import running_average
from tfnvp._compat import stop_recording, sublayers
from tfnvp.running_average import Training

__all__ = ["check_recomputable", "recompute"]


def recompute(fn: Callable[[tf.Tensor, Training], tf.Tensor], x: tf.Tensor,
              training: Training,
              weights: Sequence[keras.Variable] | None = None) -> tf.Tensor:
    """``fn(x, training)`` whose gradient recomputes ``fn`` instead of storing its activations.

    ``fn(inputs, mode)`` must be a deterministic function of ``inputs`` and of
    the variables it reads (a forward pass in mode ``mode``).  Forward:
    ``fn(x, training)`` runs without being recorded on any tape, so none of
    its intermediate tensors are kept.  Backward: ``fn`` runs again on ``x``
    under a tape, in mode ``running_average.recomputation(training)``
    (``RECOMPUTE`` for a training mode: the same batch statistics, no second
    moving-average update), and that tape's gradients, for ``x`` and for every
    variable ``fn`` read, are returned.  The mode is a call argument, not
    layer state, so the replicas of a ``tf.distribute`` strategy (threads
    that trace concurrently) cannot see each other's.  As in
    ``tf.recompute_grad``, the recomputation takes a data dependency on the
    incoming gradient, so neither Grappler nor XLA can merge it with (or
    hoist it to) the forward pass.

    ``weights``: Keras variables ``fn`` reads (the trainable ones).  They are
    read once more, outside the custom gradient, and the recomputation runs
    on those values (a ``keras.StatelessScope``) instead of reading the
    variables: their gradients reach the variables through the reads.  Inside
    a shared body's function (``tfnvp.nets.shared_body``) that is required: a
    variable read while the gradient is built would read the layer that
    traced the function, not the caller's.  The forward pass does not change
    trainable weights, so the gradients are the same.
    """
    mode = running_average.recomputation(training)
    weights = list(weights or [])
    # Read here, outside the custom gradient: their gradients reach the variables
    # by ordinary differentiation of the reads.
    values = [tf.convert_to_tensor(w) for w in weights]

    @tf.custom_gradient
    def forward(inputs, *weight_values):
        with stop_recording():
            outputs = fn(inputs, training)

        def backward(grad_outputs, variables=None):
            variables = list(variables or [])
            # A zero that depends on the incoming gradient (as in
            # tf.recompute_grad: NaN only if the gradient is NaN already).
            probe = tf.reduce_max(tf.cast(tf.reshape(grad_outputs, [-1])[:1], tf.float32))
            zero = tf.where(tf.equal(probe, probe), 0.0, float("nan"))
            again = tf.identity(inputs) + tf.cast(zero, inputs.dtype)
            with tf.GradientTape() as tape, keras.StatelessScope(
                    list(zip(weights, weight_values))):
                tape.watch(again)
                tape.watch(weight_values)
                tape.watch(variables)
                recomputed = fn(again, mode)
            grads = tape.gradient(recomputed, [again, *weight_values, *variables],
                                  output_gradients=grad_outputs)
            count = 1 + len(weight_values)
            return grads[:count], grads[count:]

        return outputs, backward

    return forward(x, *values)


def check_recomputable(body: keras.layers.Layer, recompute_gradients: bool) -> None:
    """Refuses ``recompute_gradients=True`` for a body with dropout (a ValueError).

    ``recompute`` runs the body a second time in the backward pass; a
    ``keras.layers.Dropout`` in it would draw a second mask there, and the
    gradients returned would not be those of the forward pass's network.
    """
    if not recompute_gradients:
        return
    rates = [sub.rate for sub in sublayers(body)
             if isinstance(sub, keras.layers.Dropout) and sub.rate > 0]
    if rates:
        raise ValueError(f"recompute_gradients=True cannot be combined with dropout in the "
                         f"conditioner (dropout={rates[0]}): the backward pass recomputes the "
                         f"network with a different dropout mask, so the gradients would be "
                         f"wrong. Use dropout=0 or recompute_gradients=False.")
