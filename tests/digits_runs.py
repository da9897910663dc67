"""Short training runs on scikit-learn's 8x8 digits, shared by the quality tests.

One unconditional run serves tests/test_training.py (held-out bits/dim at steps 0 and 150)
and tests/test_conditional.py (at step 100, against a class-conditional run of the same
seed, data order and steps), and tests/test_recalibration.py starts from a copy of it at
step 100: a run is trained once per process, on demand, and its
held-out bits/dim (evaluation mode, fixed dequantization noise) are recorded as it passes
each of ``EVALUATED_STEPS``.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

import tfnvp

EVAL_SEED = (0, 1)
EVALUATED_STEPS = (0, 100, 150)
BATCH = 64


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """uint8 [N, 8, 8, 1] images: 1,500 training and 297 held-out digits, and their labels."""
    data = load_digits()
    images = np.round(data.images * 255 / 16).astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    train, test = order[:1500], order[1500:]
    return images[train], data.target[train], images[test], data.target[test]


class DigitsRun:
    """A RealNVP (2 scales, 1 residual block, 16 feature maps; running averages with
    momentum 0.9 keep up with a short run's weights) trained with Adam(3e-3) on batches
    of 64 drawn by ``default_rng(0)``; labelled when ``num_classes`` is set.

    Adam is ``tfnvp.FusedAdam`` (one ``ResourceApplyAdam`` per weight instead of Keras'
    ~40 ops): the first step's tracing and graph optimization take half the time, and
    what the tests check (held-out bits/dim after so many steps) does not depend on it."""

    def __init__(self, num_classes: int | None, conditioner_form: str = "release"):
        keras.utils.set_random_seed(0)
        self.conditional = num_classes is not None
        self._config = dict(image_shape=(8, 8, 1), num_scales=2, num_res_blocks=1,
                            hidden_channels=16, batch_norm_momentum=0.9, validate_args=False,
                            num_classes=num_classes, conditioner_form=conditioner_form)
        self.model = tfnvp.RealNVP(**self._config)
        self._optimizer = tfnvp.FusedAdam(3e-3)
        self._rng = np.random.default_rng(0)
        self.steps = 0
        self._bits = {0: self._held_out_bits_per_dim()}
        self._weights = {0: self.model.get_weights()}

    @tf.function(input_signature=[tf.TensorSpec([BATCH, 8, 8, 1], tf.uint8),
                                  tf.TensorSpec([BATCH], tf.int64)])
    def _step(self, images, labels):
        model = self.model
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.nll(images, training=True,
                                            labels=labels if self.conditional else None))
        grads = tape.gradient(loss, model.trainable_variables)
        self._optimizer.apply_gradients(zip(grads, model.trainable_variables))

    def _held_out_bits_per_dim(self) -> float:
        _, _, test, test_labels = digits()
        bits = self.model.bits_per_dim(test, seed=EVAL_SEED,
                                       labels=test_labels if self.conditional else None)
        return float(tf.reduce_mean(bits))

    def held_out_bits_per_dim(self, step: int) -> float:
        """Held-out bits/dim after ``step`` training steps (one of ``EVALUATED_STEPS``)."""
        assert step in EVALUATED_STEPS, step
        train, train_labels, _, _ = digits()
        while self.steps < step:
            batch = self._rng.integers(0, len(train), BATCH)
            self._step(train[batch], train_labels[batch])
            self.steps += 1
            if self.steps in EVALUATED_STEPS:
                self._bits[self.steps] = self._held_out_bits_per_dim()
                self._weights[self.steps] = self.model.get_weights()
        return self._bits[step]

    def model_at(self, step: int) -> tfnvp.RealNVP:
        """A new model holding the run's weights and statistics after ``step`` steps (one of
        ``EVALUATED_STEPS``), for tests that change them: the run's own model trains on."""
        self.held_out_bits_per_dim(step)
        model = tfnvp.RealNVP(**self._config)
        model.set_weights(self._weights[step])
        return model


@functools.cache
def digits_run(num_classes: int | None = None, conditioner_form: str = "release") -> DigitsRun:
    """The process's one run for ``num_classes`` and ``conditioner_form`` (``RealNVP``'s;
    trained further as steps are asked for)."""
    return DigitsRun(num_classes, conditioner_form)
