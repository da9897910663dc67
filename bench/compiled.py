"""Compiled, fixed-signature entry points of a ``RealNVP`` used by the benchmark.

Each function is a ``tf.function`` with an ``input_signature`` of a fixed
batch size and image shape, so it is traced exactly once whatever values it
is called with (``tests/test_performance_modes.py`` checks the trace counts):
no retracing, no Python in the hot path.  ``jit_compile=True`` compiles the
whole call with XLA.

* ``compiled_log_prob(model, batch)``: ``x -> log p(x)`` (nats), evaluation
  mode (running batch-norm statistics), every coupling network evaluated
  once and the log-det summed once (``FusedChain``).
* ``compiled_sample(model, batch)``: ``seed -> images``, ``z ~ N(0, T^2 I)``
  from a stateless seed, decoded by the flow's ``forward``.
* ``compiled_train_step(model, optimizer, batch)``: one Adam step on the
  mean ``model.nll`` (the structure of ``trainers/steps.py``'s
  step without its replica all-reduce, clipping and finiteness check); used
  only when ``trainers.steps.TrainSteps`` cannot be imported.
"""

from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

__all__ = ["compiled_log_prob", "compiled_sample", "compiled_train_step"]


def _image_spec(model, batch_size: int, image_shape: Sequence[int] | None) -> tf.TensorSpec:
    shape = tuple(image_shape or model.image_shape)
    return tf.TensorSpec((int(batch_size),) + shape, model.flow_dtype, name="images")


def compiled_log_prob(model, batch_size: int, image_shape: Sequence[int] | None = None,
                      jit_compile: bool = False) -> tf.types.experimental.GenericFunction:
    """``f(x)``: log-densities (nats) of a ``[batch_size, H, W, C]`` batch, eval mode."""

    def log_prob(x: tf.Tensor) -> tf.Tensor:
        return model.log_prob(x, training=False)

    return tf.function(log_prob, input_signature=[_image_spec(model, batch_size, image_shape)],
                       jit_compile=jit_compile, reduce_retracing=False)


def compiled_sample(model, batch_size: int, image_shape: Sequence[int] | None = None,
                    temperature: float = 1.0, jit_compile: bool = False
                    ) -> tf.types.experimental.GenericFunction:
    """``f(seed)``: ``batch_size`` images from ``z ~ N(0, temperature^2 I)``, stateless ``seed`` (int32[2])."""
    shape = tuple(image_shape or model.image_shape)

    def sample(seed: tf.Tensor) -> tf.Tensor:
        return model.sample(int(batch_size), temperature=temperature, seed=seed, image_shape=shape)

    return tf.function(sample, input_signature=[tf.TensorSpec([2], tf.int32, name="seed")],
                       jit_compile=jit_compile)


def compiled_train_step(model, optimizer: keras.optimizers.Optimizer, batch_size: int,
                        image_shape: Sequence[int] | None = None, jit_compile: bool = False
                        ) -> tf.types.experimental.GenericFunction:
    """``f(x) -> mean NLL``: one optimizer step in training mode."""
    variables = list(model.trainable_variables)
    optimizer.build(variables)

    def train_step(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.nll(x, training=True))
        grads = tape.gradient(loss, variables)
        optimizer.apply(grads, variables)
        return loss

    return tf.function(train_step, input_signature=[_image_spec(model, batch_size, image_shape)],
                       jit_compile=jit_compile)
