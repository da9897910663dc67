"""Run by ``tests/test_shared_body.py`` in a fresh process: for each of ``MODELS``, three
XLA-compiled training steps on three different batches, with TensorFlow's log of every
XLA compilation on (``TF_CPP_VMODULE``, set by the caller before TensorFlow loads).

Usage: ``python tests/xla_compile_count.py``; prints ``NAME traced N`` per model.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

import tfnvp

SHAPE = (8, 8, 3)
# The class-conditional Real NVP runs every part of the unconditional one (the release's
# prepared input, with the labels' planes added); Flow++'s components are the gated blocks'
# split and attention.
MODELS = {
    "conditional": lambda: tfnvp.RealNVP(SHAPE, num_scales=2, num_res_blocks=1,
                                         hidden_channels=8, num_classes=3),
    "flowpp": lambda: tfnvp.RealNVP(SHAPE, num_scales=1, num_res_blocks=1, hidden_channels=8,
                                    coupling="logistic_mixture", mixture_components=2,
                                    attention=True, attention_min_depth=0,
                                    gated_convolutions=True),
}


def main(name: str) -> None:
    model = MODELS[name]()
    labels = 1 if name == "conditional" else None

    @tf.function(jit_compile=True)
    def step(x: tf.Tensor) -> list[tf.Tensor]:
        kw = {} if labels is None else dict(labels=tf.fill([4], labels))
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.log_prob(x, training=True, **kw))
        return tape.gradient(loss, model.trainable_variables)

    rng = np.random.default_rng(0)
    for _ in range(3):
        step(tf.constant(rng.uniform(0, 256, (4,) + SHAPE), tf.float32))
    print(name, "traced", step.experimental_get_tracing_count(), flush=True)


if __name__ == "__main__":
    for model_name in MODELS:
        main(model_name)
