"""The conditioners' batch normalization: Keras' layer, debiased, as one fused op.

``BatchNormalization`` is a ``keras.layers.BatchNormalization`` (the same
variables, names and configuration) whose moving averages are zero-debiased
(``tfnvp.running_average``) and which runs as one ``FusedBatchNormV3`` (a
oneDNN primitive on CPU, and its fused gradient) where that op applies.  It
normalizes the activations of the conditioner networks (``tfnvp.nets.ResNet``,
``tfnvp.nets.conditioner_input``); the flow's own batch normalization, a
bijector with a log-det (section 3.6), is ``tfnvp.bijectors.BatchNorm``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfnvp import running_average

__all__ = ["BatchNormalization"]

_FUSED_DTYPES = (tf.float32, tf.bfloat16, tf.float16)


@keras.saving.register_keras_serializable(package="tfnvp")
class BatchNormalization(keras.layers.BatchNormalization):
    """``keras.layers.BatchNormalization``, debiased, computed by ``FusedBatchNormV3``.

    Same variables, names and configuration as the Keras layer, plus the
    update counter ``num_updates``; training mode normalizes with the batch's
    mean and biased variance, evaluation mode with the moving averages.  The
    moving averages are updated with Adam's bias correction
    (``tfnvp.running_average``), so they are right from the first update
    instead of lagging the network by ~``1 / (1 - momentum)`` updates; with
    ``training=tfnvp.running_average.RECALIBRATE`` they become exact averages
    over the batches and the batch is normalized with them
    (``FlowModel.recalibrate``).

    Performance: one fused op (a oneDNN primitive on CPU, and its fused
    gradient) instead of ~8 separate element-wise passes over the
    activations; float32 statistics also for bfloat16/float16 activations.
    Keras' ops are used where the fused op does not apply: inputs that are
    not rank-4 channels-last float32/bfloat16/float16, masks, no center,
    or statistics synchronized across more than one replica.  ``renorm`` is
    not supported.

    ``training=tfnvp.running_average.RECOMPUTE`` (a forward pass recomputed
    for its gradient, ``tfnvp.nets.recompute``) normalizes with the batch's
    statistics and leaves the moving averages and the counter untouched.
    """

    def build(self, input_shape):
        if self.renorm:
            raise ValueError("tfnvp's BatchNormalization does not support renorm.")
        super().build(input_shape)
        self.num_updates = running_average.add_counter(self)

    def _fused(self, inputs: tf.Tensor, mask) -> bool:
        if (mask is not None or not self.center
                or inputs.shape.rank != 4 or self.axis not in (-1, 3)
                or inputs.dtype not in _FUSED_DTYPES or self.moving_mean.dtype != tf.float32):
            return False
        if self.synchronized:
            ctx = tf.distribute.get_replica_context()
            if ctx is not None and ctx.num_replicas_in_sync > 1:
                return False
        return True

    def call(self, inputs, training=None, mask=None):
        inputs = tf.convert_to_tensor(inputs)
        fused = self._fused(inputs, mask)
        if not (training and self.trainable):
            if not fused:
                return super().call(inputs, training=False, mask=mask)
            return self._fused_inference(inputs, tf.convert_to_tensor(self.moving_mean),
                                         tf.convert_to_tensor(self.moving_variance))
        if fused:
            empty = tf.constant([], tf.float32)
            y, mean, variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=self.scale_factors(),
                offset=tf.convert_to_tensor(self.beta), mean=empty, variance=empty,
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
                is_training=True)
            # The op returns the unbiased (n / (n - 1)) variance; the moving
            # average is of the biased one, which is what normalized `y`.
            n = inputs.shape[:3].num_elements()
            n = (tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32) if n is None
                 else tf.constant(float(n)))
            variance = variance * ((n - 1.0) / tf.maximum(n, 1.0))
        else:
            inputs = tf.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
            mean, variance = self._moments(inputs, mask)
        cumulative = running_average.is_cumulative(training)
        if not running_average.is_recomputation(training):
            new_mean, new_variance = running_average.update(
                self.moving_mean, self.moving_variance, self.num_updates, mean, variance,
                self.momentum, cumulative=cumulative)
        if cumulative:
            mean, variance = new_mean, new_variance
            if fused:
                return self._fused_inference(inputs, mean, variance)
        elif fused:
            return tf.cast(y, self.compute_dtype)
        outputs = keras.ops.batch_normalization(
            inputs, mean=mean, variance=variance, axis=self.axis,
            offset=tf.cast(self.beta, inputs.dtype) if self.center else None,
            scale=tf.cast(self.gamma, inputs.dtype) if self.scale else None,
            epsilon=self.epsilon)
        return tf.cast(outputs, self.compute_dtype)

    def scale_factors(self) -> tf.Tensor:
        """``gamma``, or ones for a layer without a learned scale (``scale=False``)."""
        if self.scale:
            return tf.convert_to_tensor(self.gamma)
        return tf.ones_like(tf.convert_to_tensor(self.moving_mean))

    def _fused_inference(self, inputs: tf.Tensor, mean: tf.Tensor,
                         variance: tf.Tensor) -> tf.Tensor:
        y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=self.scale_factors(),
            offset=tf.convert_to_tensor(self.beta), mean=mean, variance=variance,
            epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
            is_training=False)
        return tf.cast(y, self.compute_dtype)
