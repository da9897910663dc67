"""Conditioner bodies traced once per kind (``tfnvp.nets.shared_body``).

The shared functions must compute what the inline bodies compute (the same
log-densities, latents, gradients and batch-norm updates, in float64 to
1e-10), read each caller's own weights, and be traced once per kind of body.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnvp
from tfnvp.nets import shared_body

SHAPE = (8, 8, 3)


@pytest.fixture
def inline():
    """Sets ``shared_body.ENABLED`` for the functions traced inside the block."""
    def set_enabled(enabled: bool) -> None:
        shared_body.ENABLED = enabled

    yield set_enabled
    shared_body.ENABLED = True


def _perturbed(model: keras.Model, seed: int) -> keras.Model:
    """Random weights everywhere (a new coupling is the identity, which would hide errors)."""
    rng = np.random.default_rng(seed)
    for v in model.trainable_variables:
        v.assign(v + 0.05 * rng.standard_normal(v.shape))
    return model


def _results(model, x, labels=None) -> list[np.ndarray]:
    """log p (evaluation), the training-mode loss, its gradients, the latent and every
    non-trainable variable after the training-mode call, from one fresh ``tf.function``."""
    kw = {} if labels is None else dict(labels=labels)

    @tf.function(autograph=False)
    def run(x):
        log_prob = model.log_prob(x, **kw)
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(model.log_prob(x, training=True, **kw))
        grads = tape.gradient(loss, model.trainable_variables)
        return [log_prob, loss, *grads, model.encode(x, **kw)]

    out = [tf.convert_to_tensor(t).numpy() for t in run(x)]
    return out + [v.numpy() for v in model.non_trainable_variables]


MODELS = {
    "realnvp": lambda: tfnvp.RealNVP(SHAPE, num_scales=2, num_res_blocks=2, hidden_channels=8,
                                     dtype="float64"),
    "recompute_gradients": lambda: tfnvp.RealNVP(SHAPE, num_scales=2, num_res_blocks=1,
                                                 hidden_channels=8, dtype="float64",
                                                 recompute_gradients=True),
    "glow": lambda: tfnvp.Glow(SHAPE, num_scales=2, steps_per_scale=2, hidden_channels=8,
                               dtype="float64"),
    "conditional": lambda: tfnvp.RealNVP(SHAPE, num_scales=2, num_res_blocks=1,
                                         hidden_channels=8, dtype="float64", num_classes=3),
    "flowpp": lambda: tfnvp.RealNVP(SHAPE, num_scales=2, num_res_blocks=1, hidden_channels=8,
                                    dtype="float64", coupling="logistic_mixture",
                                    mixture_components=2, attention=True,
                                    gated_convolutions=True),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shared_bodies_compute_what_inline_bodies_compute(name, inline):
    keras.utils.set_random_seed(0)
    model = _perturbed(MODELS[name](), seed=1)
    x = tf.constant(np.random.default_rng(2).uniform(0, 256, (4,) + SHAPE))
    labels = tf.constant([0, 1, 2, 1]) if name == "conditional" else None
    start = [v.numpy() for v in model.variables]
    results = {}
    for enabled in (False, True):
        for variable, value in zip(model.variables, start):
            variable.assign(value)
        inline(enabled)
        results[enabled] = _results(model, x, labels)
    assert len(results[True]) == len(results[False])
    for shared, plain in zip(results[True], results[False]):
        np.testing.assert_allclose(shared, plain, rtol=1e-10, atol=1e-10)
    grads = results[True][2:2 + len(model.trainable_variables)]
    # The checks are not vacuous: every weight has a gradient, and the training-mode
    # call moved the batch-norm statistics.
    assert sum(np.any(g != 0) for g in grads) >= len(grads) - 3
    if model.non_trainable_variables:
        moved = [not np.array_equal(v.numpy(), s) for v, s in
                 zip(model.variables, start) if not v.trainable]
        assert any(moved)


def test_each_caller_reads_its_own_weights(inline):
    """Two models of one configuration share the functions, not the weights."""
    keras.utils.set_random_seed(0)
    models = [_perturbed(MODELS["realnvp"](), seed=s) for s in (1, 2)]
    x = tf.constant(np.random.default_rng(3).uniform(0, 256, (3,) + SHAPE))
    inline(False)
    plain = [tf.function(m.log_prob)(x).numpy() for m in models]
    inline(True)
    shared = [tf.function(m.log_prob)(x).numpy() for m in models]
    assert not np.allclose(plain[0], plain[1])
    for s, p in zip(shared, plain):
        np.testing.assert_allclose(s, p, rtol=1e-10)


def test_one_trace_per_kind_of_body():
    """A two-scale Real NVP has three kinds of conditioner (checkerboard couplings of
    each scale, channel couplings of the finest: both parities share one, since the
    release's prepared input, which reads the coupling's parity, runs before the shared
    trace) and two kinds of residual block (16x16 and 8x8 hidden maps): five functions,
    each traced once, the conditioners' called by one op per coupling."""
    model = tfnvp.RealNVP((16, 16, 3), num_scales=2, num_res_blocks=1, hidden_channels=8)
    before = set(shared_body._FUNCTIONS)
    graph = tf.function(model.log_prob).get_concrete_function(
        tf.TensorSpec((5,) + model.image_shape)).graph
    new = {k: f for k, f in shared_body._FUNCTIONS.items() if k not in before}
    calls = [op for op in graph.get_operations() if op.type == "StatefulPartitionedCall"]
    assert len(model.conditioners) == 10
    assert len(new) == 5
    assert [f.experimental_get_tracing_count() for f in new.values()] == [1] * 5
    assert len(calls) == len(model.conditioners)
    library = {f.signature.name: f for f in graph.as_graph_def().library.function}
    assert all(library[op.get_attr("f").name].attr["_noinline"].b for op in calls)


def test_inline_under_several_replicas():
    """Synchronized batch norms all-reduce inside the body: with more than one
    replica it is traced inline (``tests/replica_equivalence_check.py`` checks the
    numbers); with one, shared."""
    model = tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=1, hidden_channels=4)
    body = model.conditioners[0].body
    seen = {}

    def probe():
        seen[tf.distribute.get_replica_context().num_replicas_in_sync] = (
            shared_body.shareable(body))

    for devices in (["/cpu:0"], ["/cpu:0", "/cpu:1"]):
        strategy = tf.distribute.MirroredStrategy(devices)
        strategy.run(tf.function(probe, autograph=False))
    assert seen == {1: True, 2: False}


def test_first_calls_of_every_method_give_no_retracing_warning():
    """Each method's first eager call traces its own function (and shared bodies theirs):
    TensorFlow's "triggered tf.function retracing" warning, which counts traces per code
    object, must not fire (the README's first example printed it)."""
    import logging

    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        model = tfnvp.RealNVP((8, 8, 3), num_scales=2, num_res_blocks=1, hidden_channels=8)
        images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
        x = tfnvp.dequantize(images, seed=(1, 2))
        model.distribution.log_prob(x)
        model.log_prob(x)
        model.nll(images, seed=(1, 2))
        model.bits_per_dim(images, seed=(1, 2))
        model.decode(model.encode(x))
        model.sample(3, seed=(3, 4))
        model.log_prob(x, training=True)
        assert len(model.compiled_functions()) >= 6
    finally:
        logger.removeHandler(handler)
    assert not [r for r in records if "retracing" in r.getMessage()]


def test_a_model_built_under_a_strategy_reads_each_layers_weights_outside_it(inline):
    """Variables created under a ``MirroredStrategy`` are distributed variables; called
    outside the strategy (and inside it, on its one replica) every conditioner reads its
    own weights, as inline."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = _perturbed(MODELS["realnvp"](), seed=4)
    x = tf.constant(np.random.default_rng(5).uniform(0, 256, (3,) + SHAPE))
    results = {}
    for enabled in (False, True):
        inline(enabled)
        outside = tf.function(model.log_prob)(x).numpy()
        inside = strategy.run(tf.function(model.log_prob), args=(x,))
        results[enabled] = (outside, strategy.experimental_local_results(inside)[0].numpy())
    for shared, plain in zip(results[True], results[False]):
        np.testing.assert_allclose(shared, plain, rtol=1e-10)


def test_xla_compiles_a_training_step_once():
    """An XLA-compiled training step is compiled once, not at every step: no input of a
    shared body's call may become a compile-time constant (``tfnvp.nets.shared_body``;
    the release's prepared input inside the trace, and Flow++'s gated blocks' split, made
    XLA compile every step again, the data included as a constant).  Counted from
    TensorFlow's log of its compilations, in a fresh process, for a class-conditional Real
    NVP (the release's prepared input, its labels included) and Flow++'s components (gated
    blocks, attention)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).with_name("xla_compile_count.py")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="0",
               TF_CPP_VMODULE="device_compilation_profiler=1")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            env=env, timeout=900, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["conditional", "traced", "1", "flowpp", "traced", "1"]
    compiled = [line for line in result.stderr.splitlines() if "Compiled __inference" in line]
    assert len(compiled) == 2, result.stderr[-3000:]  # One per model: the log is on.
    assert all(" 1 times" in line for line in compiled), compiled
