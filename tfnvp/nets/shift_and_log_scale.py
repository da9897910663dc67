"""The coupling layer's s and t heads with a bounded log-scale.

A conditioner body (``ResNet`` for images, an MLP for vectors) produces
``2 * channels`` features; they are split into a shift ``t`` and a raw
log-scale, which is bounded as ``s = scale * tanh(raw)`` with a learned
per-channel ``scale`` (the original implementation's stabilization of eq. (9)).

Conditioning: a conditional flow passes a per-example ``context`` (e.g.
one-hot class labels, ``[batch, K]``) with every call.  It is broadcast over
the input's spatial positions and concatenated to ``b * x`` as ``K`` extra
input channels (features, for vectors), so the body's first layer -- built
from the first call -- reads ``[b * x, context]``: with one-hot labels this is
a learned, class-dependent bias of the first convolution's (or dense
layer's) output at every position, and every later layer sees it.  The body
is unchanged otherwise, and an unconditional call (``context=None``) builds
exactly the unconditional network.  A spatial context, a feature map with the
input's positions (``[batch, H, W, K]``, e.g. a variational dequantizer's image
features), is concatenated as it is.
The head computes in the model's dtype (float32 or float64) even when the
body runs in bfloat16/float16, so the coupling arithmetic and log-dets keep
full precision and the flow stays exactly invertible.

Memory-saving backprop: with ``recompute_gradients=True`` the body's
activations are not kept for the backward pass; only its input is, and the
body is run a second time, on that input, when its gradient is needed
(``recompute``, the ``tf.recompute_grad`` scheme).  That trades one extra
forward pass of each conditioner (about +1/3 of a training step's FLOPs)
for activation memory of one conditioner instead of all of them.  The
recomputation must reproduce the forward pass exactly, so a body with dropout
(``ResNet(dropout=p > 0)``, Flow++'s conditioners) is refused: its second pass
would draw another dropout mask and the gradients would be those of a
different network (``check_recomputable``).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import keras
import tensorflow as tf
from tensorflow.python.eager import record  # tf.recompute_grad's own tape control.

__all__ = ["BodyConfig", "ShiftAndLogScale", "body_features", "check_recomputable",
           "concat_context", "recompute"]


def concat_context(x: tf.Tensor, context: tf.Tensor) -> tf.Tensor:
    """``[x, context]`` on the last axis, cast to the dtype of ``x`` (``[batch, ..., C]``).

    ``context`` is either per example, ``[batch, K]``, broadcast over the
    positions of ``x``, or a feature map of the rank of ``x``, ``[batch, ...,
    K]`` with the positions of ``x`` (e.g. the image features of a variational
    dequantizer, ``tfnvp.variational_dequantization``), concatenated as it is.
    """
    if context.shape[-1] is None or context.shape.rank not in (2, x.shape.rank):
        raise ValueError(f"context must have shape [batch, K] or [batch, ..., K] of the "
                         f"input's rank {x.shape.rank}, with a known K, got {context.shape}.")
    if context.shape.rank == x.shape.rank:
        return tf.concat([x, tf.cast(context, x.dtype)], axis=-1)
    context = tf.reshape(tf.cast(context, x.dtype),
                         [-1] + [1] * (x.shape.rank - 2) + [context.shape[-1]])
    context = tf.zeros_like(x[..., :1]) + context  # Broadcast over the positions.
    return tf.concat([x, context], axis=-1)


@contextlib.contextmanager
def _frozen_statistics(layer: keras.layers.Layer) -> Iterator[None]:
    """Batch-norm layers in ``layer`` leave their moving averages unchanged.

    The recomputation repeats the training-mode forward pass, whose batch
    normalizations would update their moving averages a second time.  With
    ``momentum = 1`` the update ``m * 1 + batch * 0`` is the identity (and
    ``tfnvp.nets.resnet.BatchNormalization`` skips it altogether); the batch
    statistics used for normalizing, hence the gradients, are unchanged.
    """
    norms = [sub for sub in layer._flatten_layers(include_self=True, recursive=True)
             if isinstance(sub, keras.layers.BatchNormalization)]
    saved = [norm.momentum for norm in norms]
    for norm in norms:
        norm.momentum = 1.0
    try:
        yield
    finally:
        for norm, momentum in zip(norms, saved):
            norm.momentum = momentum


def recompute(fn: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor,
              layer: keras.layers.Layer) -> tf.Tensor:
    """``fn(x)`` whose gradient recomputes ``fn`` instead of storing its activations.

    ``fn`` must be a deterministic function of ``x`` and of ``layer``'s
    variables (a training-mode forward pass of ``layer``).  Forward: ``fn(x)``
    runs without being recorded on any tape, so none of its intermediate
    tensors are kept.  Backward: ``fn`` runs again on ``x`` under a tape
    (``layer``'s batch-norm statistics frozen, see ``_frozen_statistics``) and
    that tape's gradients, for ``x`` and for every variable ``fn`` read, are
    returned.  As in ``tf.recompute_grad``, the recomputation takes a data
    dependency on the incoming gradient, so neither Grappler nor XLA can merge
    it with (or hoist it to) the forward pass.
    """

    @tf.custom_gradient
    def forward(inputs):
        with record.stop_recording():
            outputs = fn(inputs)

        def backward(grad_outputs, variables=None):
            variables = list(variables or [])
            # A zero that depends on the incoming gradient (as in
            # tf.recompute_grad: NaN only if the gradient is NaN already).
            probe = tf.reduce_max(tf.cast(tf.reshape(grad_outputs, [-1])[:1], tf.float32))
            zero = tf.where(tf.equal(probe, probe), 0.0, float("nan"))
            again = tf.identity(inputs) + tf.cast(zero, inputs.dtype)
            with _frozen_statistics(layer), tf.GradientTape() as tape:
                tape.watch(again)
                tape.watch(variables)
                recomputed = fn(again)
            grads = tape.gradient(recomputed, [again] + variables, output_gradients=grad_outputs)
            return grads[0], grads[1:]

        return outputs, backward

    return forward(x)


def check_recomputable(body: keras.layers.Layer, recompute_gradients: bool) -> None:
    """Refuses ``recompute_gradients=True`` for a body with dropout (a ValueError).

    ``recompute`` runs the body a second time in the backward pass; a
    ``keras.layers.Dropout`` in it would draw a second mask there, and the
    gradients returned would not be those of the forward pass's network.
    """
    if not recompute_gradients:
        return
    rates = [sub.rate for sub in body._flatten_layers(include_self=True, recursive=True)
             if isinstance(sub, keras.layers.Dropout) and sub.rate > 0]
    if rates:
        raise ValueError(f"recompute_gradients=True cannot be combined with dropout in the "
                         f"conditioner (dropout={rates[0]}): the backward pass recomputes the "
                         f"network with a different dropout mask, so the gradients would be "
                         f"wrong. Use dropout=0 or recompute_gradients=False.")


class BodyConfig:
    """Keras (de)serialization of a layer whose first constructor argument is a ``body``
    layer: ``get_config`` adds it serialized, ``from_config`` rebuilds it first."""

    def get_config(self) -> dict:
        return {**super().get_config(), "body": keras.saving.serialize_keras_object(self.body)}

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        return cls(body=keras.saving.deserialize_keras_object(config.pop("body")), **config)

    def build(self, x_shape: tuple[int | None, ...],
              context_shape: tuple[int | None, ...] | None = None) -> None:
        """Builds ``body`` on what ``body_features`` hands it, ``x`` with the
        context's ``K`` features appended, without tracing ``call``."""
        extra = 0 if context_shape is None else context_shape[-1]
        self.body.build(tuple(x_shape[:-1]) + (x_shape[-1] + extra,))


def body_features(head: keras.layers.Layer, x: tf.Tensor, training: bool,
                  context: tf.Tensor | None) -> tf.Tensor:
    """A head's ``head.body`` on ``[x, context]`` (``concat_context``), recomputed in
    the backward pass if ``head.recompute_gradients``, cast to the head's variable dtype."""
    if context is not None:
        x = concat_context(x, context)
    if head.recompute_gradients:
        raw = recompute(lambda t: head.body(t, training=training), x, head.body)
    else:
        raw = head.body(x, training=training)
    return tf.cast(raw, head.variable_dtype)


@keras.saving.register_keras_serializable(package="tfnvp")
class ShiftAndLogScale(BodyConfig, keras.layers.Layer):
    """Maps ``b * x`` to ``(shift, log_scale)``, each with ``channels`` features.

    Args:
      body: a Keras layer producing ``2 * channels`` features whose last layer
        starts at zero (then ``shift = log_scale = 0``: an identity coupling).
      channels: the size of the coupled tensor's last axis.
      recompute_gradients: recompute the body's activations in the backward
        pass instead of storing them (see the module docstring); a ValueError
        for a body with dropout.
    """

    def __init__(self, body: keras.layers.Layer, channels: int,
                 recompute_gradients: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.body = body
        self.channels = int(channels)
        self.recompute_gradients = bool(recompute_gradients)
        check_recomputable(body, self.recompute_gradients)
        self.scale = self.add_weight(name="log_scale_factor", shape=(self.channels,),
                                     initializer="ones")

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels,
                "recompute_gradients": self.recompute_gradients}

    def call(self, x: tf.Tensor, training: bool = False,
             context: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        raw = body_features(self, x, training, context)
        shift, raw_log_scale = tf.split(raw, 2, axis=-1)
        return shift, tf.convert_to_tensor(self.scale) * tf.tanh(raw_log_scale)
