"""Performance modes: compiled entry points, bfloat16 conditioners, recomputed gradients.

Only behaviour is tested here (trace counts, call counts, numerics); speed is
measured by ``bench/throughput.py``, never asserted.  Small models only.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnvp
from bench import compiled
from tfnvp.nets import shared_body
from tfnvp.nets.batch_norm import BatchNormalization
from tfnvp.nets.resnet import ResNet

from graph_ops import executed_op_types

SHAPE = (8, 8, 3)


def _model(num_scales: int = 2, **kwargs) -> tfnvp.RealNVP:
    return tfnvp.RealNVP(SHAPE, num_scales=num_scales, num_res_blocks=1, hidden_channels=8,
                         **kwargs)


def _perturb(model: tfnvp.RealNVP, seed: int = 1, stddev: float = 0.05) -> None:
    """Moves every weight (zero-gain output convs included) off its initial value."""
    rng = np.random.default_rng(seed)
    for v in model.weights:
        value = v.numpy()
        if "moving_variance" in v.path:
            v.assign(value * np.exp(rng.normal(0, 0.1, value.shape)).astype(value.dtype))
        else:
            v.assign(value + rng.normal(0, stddev, value.shape).astype(value.dtype))


def _copy_weights(source: tfnvp.RealNVP, target: tfnvp.RealNVP) -> None:
    assert [v.shape for v in source.weights] == [v.shape for v in target.weights]
    for s, t in zip(source.weights, target.weights):
        t.assign(s)


def _images(n: int = 4, seed: int = 2) -> tf.Tensor:
    return tf.random.stateless_uniform((n,) + SHAPE, [seed, 0], 0.0, 255.999)


def _count_body_calls(model: tfnvp.RealNVP, monkeypatch) -> list[int]:
    """Counts each conditioner body's traced calls.  Traced inline: shared bodies
    (``tfnvp.nets.shared_body``, ``tests/test_shared_body.py``) trace one body per kind."""
    monkeypatch.setattr(shared_body, "ENABLED", False)
    counts = [0] * len(model.conditioners)
    for i, conditioner in enumerate(model.conditioners):
        original = conditioner.body.call

        def counted(*args, _i=i, _original=original, **kwargs):
            counts[_i] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(conditioner.body, "call", counted)
    return counts


def test_compiled_functions_trace_once():
    model = _model(num_scales=1, validate_args=False)
    log_prob = compiled.compiled_log_prob(model, 4)
    sample = compiled.compiled_sample(model, 3)
    step = compiled.compiled_train_step(model, keras.optimizers.Adam(1e-3), 4)
    for seed in range(3):
        x = _images(seed=seed)
        assert log_prob(x).shape == (4,)
        assert sample(tf.constant([seed, 7], tf.int32)).shape == (3,) + SHAPE
        assert np.isfinite(step(x).numpy())
    for fn in (log_prob, sample, step):
        assert fn.experimental_get_tracing_count() == 1
    np.testing.assert_allclose(log_prob(_images()), model.log_prob(_images()), rtol=1e-5)


def test_each_conditioner_runs_once_per_log_prob_in_graph_mode(monkeypatch):
    model = _model(validate_args=False)
    counts = _count_body_calls(model, monkeypatch)
    graph = compiled.compiled_log_prob(model, 2).get_concrete_function().graph
    assert counts == [1] * len(model.conditioners)
    # And once in the graph: convs per body (in, 2 per block, out, and the 1x1 skip
    # convolutions: one per block and one for the input) times couplings.
    convs = executed_op_types(graph)["Conv2D"]
    assert convs == (4 + 2) * len(model.conditioners)

    counts[:] = [0] * len(counts)
    sample_graph = compiled.compiled_sample(model, 2).get_concrete_function().graph
    assert counts == [1] * len(model.conditioners)
    assert executed_op_types(sample_graph)["Conv2D"] == convs


def test_recompute_gradients_match_and_statistics_update_once(monkeypatch):
    plain = _model(validate_args=False)
    saving = _model(validate_args=False, recompute_gradients=True)
    assert saving.get_config()["recompute_gradients"] is True
    _perturb(plain)
    _copy_weights(plain, saving)
    plain_calls = _count_body_calls(plain, monkeypatch)
    saving_calls = _count_body_calls(saving, monkeypatch)
    x = _images(6)

    def loss_and_grads(model):
        @tf.function
        def run(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(model.nll(x, training=True))
            return loss, tape.gradient(loss, model.trainable_variables)

        return run(x)

    loss0, grads0 = loss_and_grads(plain)
    loss1, grads1 = loss_and_grads(saving)
    # Each conditioner runs once in the forward pass; with recomputation once
    # more, in the backward pass.
    assert plain_calls == [1] * len(plain.conditioners)
    assert saving_calls == [2] * len(saving.conditioners)
    np.testing.assert_allclose(loss1, loss0, rtol=1e-6)
    for g0, g1, v in zip(grads0, grads1, plain.trainable_variables):
        assert g1 is not None, v.path
        np.testing.assert_allclose(g1, g0, rtol=1e-5, atol=1e-6 * float(tf.reduce_max(tf.abs(g0))) + 1e-9,
                                   err_msg=v.path)
    # Batch-norm running averages (flow and conditioners) were updated exactly once.
    for v0, v1 in zip(plain.non_trainable_variables, saving.non_trainable_variables):
        np.testing.assert_allclose(v1.numpy(), v0.numpy(), rtol=1e-6, err_msg=v0.path)
    assert any(not np.allclose(v.numpy(), 0.0) for v in plain.non_trainable_variables
               if "moving_mean" in v.path)


def test_bfloat16_conditioners_keep_flow_float32_and_exactly_invertible():
    f32 = _model(validate_args=False)
    # Larger than the default: the release form's scalar s-scales start at 0 and 1.
    _perturb(f32, stddev=0.1)
    bf16 = _model(validate_args=False, conditioner_dtype="mixed_bfloat16")
    _copy_weights(f32, bf16)
    body = bf16.conditioners[0].body
    assert body.compute_dtype == "bfloat16" and body.variable_dtype == "float32"
    x = _images(8)
    out = body(tf.zeros((1,) + SHAPE))
    assert out.dtype == tf.bfloat16

    z = bf16.encode(x)
    assert z.dtype == tf.float32
    # Coupling arithmetic is float32, but each direction's conditioner sees its float32 input
    # rounded to bfloat16, and inputs that differ by float32 rounding can round to neighbouring
    # bfloat16 values: the round trip holds to bfloat16 resolution (2^-8 relative), well
    # inside one dequantization step.
    np.testing.assert_allclose(bf16.decode(z), x, atol=2e-3, rtol=2.0 ** -8)
    log_prob = bf16.log_prob(x)
    assert log_prob.dtype == tf.float32
    # Same weights: bf16 conditioners change bits/dim by well under 0.01.
    dims = float(np.prod(SHAPE) * np.log(2.0))
    bpd32 = -f32.log_prob(x).numpy() / dims
    bpd16 = -log_prob.numpy() / dims
    assert np.all(np.isfinite(bpd16))
    assert np.max(np.abs(bpd16 - bpd32)) < 0.01, (bpd16, bpd32)
    # The perturbation is big enough for the couplings to matter.
    identity = _model(validate_args=False)
    assert np.min(np.abs(-identity.log_prob(x).numpy() / dims - bpd32)) > 0.05


def test_bfloat16_training_step_with_recompute_is_finite():
    model = _model(num_scales=1, validate_args=False, conditioner_dtype="mixed_bfloat16",
                   recompute_gradients=True)
    _perturb(model)
    step = compiled.compiled_train_step(model, keras.optimizers.Adam(1e-3), 4)
    before = [v.numpy() for v in model.trainable_variables]
    assert np.isfinite(step(_images()).numpy())
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, model.trainable_variables))


@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_fused_batch_normalization_matches_keras(policy):
    x = tf.random.stateless_normal([4, 6, 6, 5], [3, 4]) * 3.0 + 1.0
    fused = BatchNormalization(momentum=0.9, dtype=policy)
    reference = keras.layers.BatchNormalization(momentum=0.9, dtype=policy)
    fused.build(x.shape)
    reference.build(x.shape)
    rng = np.random.default_rng(0)
    for a, b in zip(fused.weights, reference.weights):
        a.assign(rng.uniform(0.5, 1.5, a.shape).astype(np.float32))
        b.assign(a)
    # After many updates the debiased average's weight (1 - m) / (1 - m^n) is Keras' 1 - m.
    fused.num_updates.assign(1000.0)
    tol = dict(rtol=1e-5, atol=1e-5) if policy == "float32" else dict(rtol=2e-2, atol=2e-2)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        ya, yb = fused(x, training=True), reference(x, training=True)
        weights = tf.range(5, dtype=tf.float32)
        la = tf.reduce_sum(tf.cast(ya, tf.float32) * weights)
        lb = tf.reduce_sum(tf.cast(yb, tf.float32) * weights)
    assert ya.dtype == yb.dtype
    np.testing.assert_allclose(np.float32(ya), np.float32(yb), **tol)
    for a, b in zip(fused.weights, reference.weights):  # moving averages, biased variance
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, err_msg=a.path)
    np.testing.assert_allclose(tape.gradient(la, x), tape.gradient(lb, x), **tol)
    np.testing.assert_allclose(tape.gradient(la, fused.gamma), tape.gradient(lb, reference.gamma),
                               rtol=1e-4 if policy == "float32" else 2e-2, atol=1e-4)
    np.testing.assert_allclose(np.float32(fused(x)), np.float32(reference(x)), **tol)


def test_resnet_uses_fused_batch_norm_and_bias_add():
    net = ResNet(8, 1, 6)

    @tf.function
    def run(x):
        return net(x, training=True)

    graph = run.get_concrete_function(tf.TensorSpec([2, 8, 8, 3])).graph
    types = executed_op_types(graph)
    assert types["FusedBatchNormV3"] and types["BiasAdd"]
    assert all(isinstance(n, BatchNormalization) for n in (net.norm_out, net.blocks[0].norm_in))


def test_eval_batch_norm_folding_matches_unfolded(monkeypatch):
    from tfnvp.nets import resnet

    model = _model(validate_args=False)
    _perturb(model)
    x = _images(4)
    results = {}
    for fold in (False, True):
        monkeypatch.setattr(resnet, "FOLD_EVAL_BATCH_NORM", fold)
        fn = compiled.compiled_log_prob(model, 4)
        graph = fn.get_concrete_function().graph
        results[fold] = fn(x).numpy()
        norms = executed_op_types(graph)["FusedBatchNormV3"]
        # Per residual block, the batch norm after the first convolution is folded.
        blocks = sum(len(c.body.blocks) for c in model.conditioners)
        # The prepared input's (the release's conditioner form), final, 2 per block (1 here).
        per_body = 1 + 1 + 2 * 1
        assert norms == len(model.conditioners) * per_body - (blocks if fold else 0)
    np.testing.assert_allclose(results[True], results[False], rtol=1e-5)


@pytest.mark.parametrize("options", [
    {}, dict(gated_convolutions=True), dict(dropout=0.2), dict(recompute_gradients=True)],
    ids=["plain", "gated", "dropout", "recompute_gradients"])
def test_lean_backward_gradients_equal_autodiff(monkeypatch, options):
    """``normalized_conv``'s recomputing gradient (the default) against plain autodiff,
    float64: the same loss, gradients and moving averages; its backward pass
    recomputes each unit's batch norm, and only in training mode."""
    from tfnvp.nets import resnet

    models = {}
    for lean in (False, True):
        keras.utils.set_random_seed(1)  # The same dropout seeds in both models.
        models[lean] = _model(num_scales=1, validate_args=False, dtype="float64", **options)
    _perturb(models[False])
    _copy_weights(models[False], models[True])
    x = tf.cast(_images(6), tf.float64)
    calls = []
    original = BatchNormalization.call

    def counted(self, inputs, training=None, mask=None):
        calls[-1] += 1
        return original(self, inputs, training=training, mask=mask)

    monkeypatch.setattr(BatchNormalization, "call", counted)
    monkeypatch.setattr(shared_body, "ENABLED", False)  # Calls counted per layer, traced inline.
    results = {}
    for lean, model in models.items():
        monkeypatch.setattr(resnet, "LEAN_BACKWARD", lean)

        @tf.function
        def run(x, model=model):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(model.nll(x, training=True, seed=[1, 2]))
            return loss, tape.gradient(loss, model.trainable_variables)

        calls.append(0)
        results[lean] = run(x)
    (loss0, grads0), (loss1, grads1) = results[False], results[True]
    np.testing.assert_allclose(loss1, loss0, rtol=1e-13)
    for g0, g1, v in zip(grads0, grads1, models[False].trainable_variables):
        assert g0 is not None and g1 is not None, v.path
        np.testing.assert_allclose(g1, g0, rtol=1e-10, atol=1e-12 * float(np.max(np.abs(g0))),
                                   err_msg=v.path)
    for v0, v1 in zip(models[False].non_trainable_variables, models[True].non_trainable_variables):
        np.testing.assert_allclose(v1.numpy(), v0.numpy(), rtol=1e-13, err_msg=v0.path)
    # Batch-norm calls while tracing, per conditioner body: the prepared input's (the
    # release's conditioner form), 2 per residual block and one before the head, again in
    # the backward pass with recompute_gradients; the lean backward pass recomputes those of
    # every unit without active dropout (not the prepared input's, no such unit; with
    # dropout, the second unit of each block keeps autodiff's gradient).
    bodies = len(models[True].conditioners)
    blocks = len(models[True].conditioners[0].body.blocks)
    units = 2 * blocks + 1
    forward = (units + 1) * (2 if options.get("recompute_gradients") else 1)
    recomputed = units - (blocks if options.get("dropout") else 0)
    assert calls == [bodies * forward, bodies * (forward + recomputed)]
