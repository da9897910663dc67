"""The coupling layer's s and t heads with a bounded log-scale.

A conditioner body (``ResNet`` for images, an MLP for vectors) produces
``2 * channels`` features; they are split into a shift ``t`` and a raw
log-scale, which is bounded as ``s = scale * tanh(raw)`` with a learned
``scale`` (the authors' release's stabilization of eq. (9)): per channel,
starting at 1 (default), or, as in the release, one scalar per coupling
(``scalar_scale=True``) with a given initial value (the release: 0 for
checkerboard couplings, 1 for channel couplings) and, optionally, in the L2
penalty (``regularized_scale``; ``FlowModel.regularized_weights``).  The
release's coupling is ``y = (x + t) * exp(s)``, ours ``y = x * exp(s) + t``
(eq. 9): the same family, ``t' = t * exp(s)``.

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
(``tfnvp.nets.recompute``, the ``tf.recompute_grad`` scheme).  That trades one extra
forward pass of each conditioner (about +1/3 of a training step's FLOPs)
for activation memory of one conditioner instead of all of them.  The
recomputation must reproduce the forward pass exactly, so a body with dropout
(``ResNet(dropout=p > 0)``, Flow++'s conditioners) is refused: its second pass
would draw another dropout mask and the gradients would be those of a
different network (``check_recomputable``).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnvp.nets import shared_body
from tfnvp.nets.empty_batches import unless_empty
from tfnvp.nets.recompute import check_recomputable, recompute

__all__ = ["BodyConfig", "ShiftAndLogScale", "body_features", "concat_context"]


def concat_context(x: tf.Tensor, context: tf.Tensor) -> tf.Tensor:
    """``[x, context]`` on the last axis, cast to the dtype of ``x`` (``[batch, ..., C]``).

    ``context`` is either per example, ``[batch, K]``, broadcast over the
    positions of ``x``, or a feature map of the rank of ``x``, ``[batch, ...,
    K]`` with the positions of ``x`` (e.g. the image features of a variational
    dequantizer, ``tfnvp.dequantizers.variational``), concatenated as it is.
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

    def run(inputs: tf.Tensor) -> tf.Tensor:
        if head.recompute_gradients:
            return recompute(lambda t, mode: shared_body.call(head.body, t, mode), inputs,
                             training)
        return shared_body.call(head.body, inputs, training)

    # Images in evaluation mode: oneDNN kernels reject empty batches (`unless_empty`).
    raw = run(x) if training or x.shape.rank < 4 else unless_empty(run, x)
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
      scalar_scale: one ``scale`` for all channels (the release's) instead of
        one per channel.
      initial_scale: the initial value of ``scale``.
      regularized_scale: ``scale`` is in the model's L2 penalty
        (``FlowModel.regularized_weights``; the release's checkerboard couplings').
    """

    def __init__(self, body: keras.layers.Layer, channels: int,
                 recompute_gradients: bool = False, scalar_scale: bool = False,
                 initial_scale: float = 1.0, regularized_scale: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.body = body
        self.channels = int(channels)
        self.recompute_gradients = bool(recompute_gradients)
        self.scalar_scale = bool(scalar_scale)
        self.initial_scale = float(initial_scale)
        self.regularized_scale = bool(regularized_scale)
        check_recomputable(body, self.recompute_gradients)
        self.scale = self.add_weight(
            name="log_scale_factor", shape=() if self.scalar_scale else (self.channels,),
            initializer=keras.initializers.Constant(self.initial_scale))

    def get_config(self) -> dict:
        config = {**super().get_config(), "channels": self.channels,
                  "recompute_gradients": self.recompute_gradients}
        if self.scalar_scale or self.initial_scale != 1.0 or self.regularized_scale:
            config.update(scalar_scale=self.scalar_scale, initial_scale=self.initial_scale,
                          regularized_scale=self.regularized_scale)
        return config

    def compute_output_shape(self, x_shape: tuple[int | None, ...],
                             context_shape: tuple[int | None, ...] | None = None
                             ) -> tuple[tuple[int | None, ...], tuple[int | None, ...]]:
        """The shapes of ``(shift, log_scale)``: ``x``'s with ``channels`` features."""
        shape = tuple(x_shape[:-1]) + (self.channels,)
        return shape, shape

    def call(self, x: tf.Tensor, training: bool = False,
             context: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        raw = body_features(self, x, training, context)
        shift, raw_log_scale = tf.split(raw, 2, axis=-1)
        return shift, tf.convert_to_tensor(self.scale) * tf.tanh(raw_log_scale)
