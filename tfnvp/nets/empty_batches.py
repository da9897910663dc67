"""Image networks on empty batches.

oneDNN's convolution and batch-norm kernels, which TensorFlow uses by
default on AVX-512 CPUs (and the trainer everywhere), reject an empty batch
("input depth must be evenly divisible by filter depth") instead of
returning an empty result, as TensorFlow's own kernels do.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

__all__ = ["unless_empty"]


def unless_empty(body: Callable[[tf.Tensor], tf.Tensor], x: tf.Tensor) -> tf.Tensor:
    """``body(x)`` for images ``x`` (``[batch..., H, W, C]``) whose batch may be empty.

    ``body`` must compute every image on its own (no batch statistics: an
    evaluation-mode conditioner, a network without batch norm).  An empty
    batch gets one zero image appended and the result is cut back to the
    batch, ``body(pad(x))[:n]``, without branches in the graph (a ``tf.cond``
    nearly doubled the first call's tracing and optimization).  A batch
    statically known to be non-empty is passed to ``body`` as it is.
    """
    if x.shape.num_elements():
        return body(x)
    shape = tf.shape(x)
    images = tf.reshape(x, tf.concat([[-1], shape[-3:]], 0))
    count = tf.shape(images)[0]
    padding = tf.cast(tf.equal(count, 0), tf.int32)
    features = body(tf.pad(images, [[0, padding], [0, 0], [0, 0], [0, 0]]))
    features = tf.reshape(features[:count], tf.concat([shape[:-1], [features.shape[-1]]], 0))
    return tf.ensure_shape(features, x.shape[:-1].concatenate([features.shape[-1]]))
