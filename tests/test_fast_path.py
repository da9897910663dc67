"""Eager model methods run through compiled functions the model keeps (issue 14, item 1).

``log_prob``, ``nll``, ``bits_per_dim``, ``encode``, ``decode`` and ``sample``
called eagerly go through ``tf.function``s kept per method and option
combination (``FlowModel.compiled_functions``), traced once per input
signature with a relaxed batch axis.  These tests count traces (never time),
compare the compiled results with the inline path (inside a user's
``tf.function``) and with ``model.distribution``, and check that bad input
still raises the eager errors before anything is compiled.
"""

import collections

import numpy as np
import pytest
import tensorflow as tf

import tfnvp

from bijector_checks import perturb_weights
from graph_ops import executed_op_types

SHAPE = (8, 8, 3)


def _real_nvp(dtype="float64", **kwargs) -> tfnvp.RealNVP:
    model = tfnvp.RealNVP(SHAPE, num_scales=1, num_res_blocks=1, hidden_channels=4, dtype=dtype,
                          **kwargs)
    extra = [model.prior] if kwargs.get("num_classes") else []
    perturb_weights(model.conditioners + model.statistics + extra, scale=0.2)
    return model


def _images(batch: int, dtype=tf.float64) -> tf.Tensor:
    return tf.random.uniform((batch,) + SHAPE, 8.0, 248.0, dtype=dtype)


def _traces(model, method: str) -> list[int]:
    """Tracing count of each function compiled for ``method``."""
    return [f.experimental_get_tracing_count() for f in model.compiled_functions().get(method, [])]


def _op_types(graph) -> collections.Counter:
    return executed_op_types(graph)


def test_log_prob_traces_once_for_new_batch_sizes_and_matches_the_inline_and_distribution_paths():
    model = _real_nvp()
    for batch in (3, 5, 3):
        model.log_prob(_images(batch))
    assert _traces(model, "log_prob") == [1]

    x = _images(4)
    compiled = model.log_prob(x).numpy()
    inline = tf.function(lambda x: model.log_prob(x))(x).numpy()
    via_distribution = tf.function(lambda x: model.distribution.log_prob(x))(x).numpy()
    np.testing.assert_allclose(compiled, inline, rtol=1e-12)
    np.testing.assert_allclose(compiled, via_distribution, rtol=1e-12)
    assert _traces(model, "log_prob") == [1]



def test_compiled_log_prob_uses_the_kernels_of_a_user_function_on_the_distribution():
    model = _real_nvp(dtype="float32")  # float32: fused and folded batch norm (nets/resnet.py).
    model.log_prob(_images(2, tf.float32))
    spec = tf.TensorSpec([None] + list(SHAPE), tf.float32)
    [kept] = model.compiled_functions()["log_prob"]
    user = tf.function(lambda x: model.distribution.log_prob(x)).get_concrete_function(spec)
    ops = _op_types(kept.get_concrete_function(spec).graph)
    expected = _op_types(user.graph)
    # The model's log-density (FlowModel._log_density) adds the inverse log-det to the prior,
    # where TFP subtracts the forward one (the same value, bit for bit): one AddV2 for one Sub;
    # and TFP's conversions add no-op Identity and Const ops.
    expected.subtract({"Sub": 1})
    expected.update({"AddV2": 1})
    free = ("Identity", "Const")
    assert (+collections.Counter({k: v for k, v in ops.items() if k not in free})
            == +collections.Counter({k: v for k, v in expected.items() if k not in free}))
    # Evaluation mode folds each residual block's inner batch norm into its
    # convolution: one FusedBatchNormV3 fewer per block (1 block per conditioner).
    norms = [layer for layer in model.batch_norm_layers()
             if isinstance(layer, tfnvp.nets.batch_norm.BatchNormalization)]
    assert ops["FusedBatchNormV3"] == len(norms) - len(model.conditioners) > 0


def test_training_and_evaluation_modes_each_trace_once_and_differ():
    model = _real_nvp()
    counter = model.statistics[0].num_updates
    before = float(counter.numpy())
    for batch in (4, 6):
        train = model.log_prob(_images(batch), training=True)
        evaluation = model.log_prob(_images(batch), training=False)
    assert sorted(_traces(model, "log_prob")) == [1, 1]
    assert float(counter.numpy()) == before + 2  # One running-average update per call.

    x = _images(4)
    train, evaluation = model.log_prob(x, training=True), model.log_prob(x)
    assert np.abs(train.numpy() - evaluation.numpy()).max() > 1e-3  # Batch vs running stats.
    inline_train = tf.function(lambda x: model.log_prob(x, training=True))(x)
    np.testing.assert_allclose(train.numpy(), inline_train.numpy(), rtol=1e-12)
    assert model.log_prob(x, training=None).numpy() == pytest.approx(
        model.log_prob(x, training=False).numpy(), rel=1e-12)
    assert sorted(_traces(model, "log_prob")) == [1, 1]  # None is evaluation mode.


def test_sample_traces_once_per_option_combination_whatever_count_seed_or_temperature():
    model = _real_nvp()
    first = model.sample(3, seed=[1, 2])
    model.sample(5, seed=tf.constant([7, 8]))
    model.sample(4, temperature=0.5, seed=[3, 4])
    model.sample(2)  # No seed: one drawn from the global generator, fed to the same function.
    assert _traces(model, "sample") == [1]
    assert first.shape == (3,) + SHAPE

    again = model.sample(3, seed=[1, 2]).numpy()
    np.testing.assert_array_equal(first.numpy(), again)
    inline = tf.function(lambda: model.sample(3, seed=[1, 2]))().numpy()
    np.testing.assert_allclose(again, inline, rtol=1e-12)
    z = 0.5 * tf.random.stateless_normal((4,) + SHAPE, seed=[3, 4], dtype=tf.float64)
    np.testing.assert_allclose(model.sample(4, temperature=0.5, seed=[3, 4]).numpy(),
                               model.decode(z).numpy(), rtol=1e-12)

    tf.random.set_seed(3)
    unseeded = model.sample(2).numpy()
    tf.random.set_seed(3)
    np.testing.assert_array_equal(model.sample(2).numpy(), unseeded)  # tf.random.set_seed holds.
    assert np.abs(model.sample(2).numpy() - unseeded).max() > 1.0  # and draws differ.

    model.sample(3, seed=[1, 2], image_shape=(4, 8, 3))  # Another event shape: its own function.
    assert _traces(model, "sample") == [1, 1]


def test_encode_decode_nll_and_bits_per_dim_trace_once_and_match_inline():
    model = _real_nvp()
    for batch in (2, 3):
        x = _images(batch)
        z = model.encode(x)
        np.testing.assert_allclose(model.decode(tf.identity(z)).numpy(), x.numpy(), atol=1e-9)
        images = tf.cast(_images(batch), tf.uint8)
        bpd = model.bits_per_dim(images, seed=[batch, 1]).numpy()
        nll = model.nll(images, seed=[batch, 1]).numpy()
        np.testing.assert_allclose(bpd, nll / (np.prod(SHAPE) * np.log(2.0)), rtol=1e-12)
        model.bits_per_dim(images)  # seed=None: a drawn seed, the same function.
        np.testing.assert_allclose(model.nll(x).numpy(), -model.log_prob(x).numpy(), rtol=1e-12)
    for method in ("encode", "decode", "bits_per_dim"):
        assert _traces(model, method) == [1], method
    assert sorted(_traces(model, "nll")) == [1, 1]  # uint8 images and float images.

    inline = tf.function(lambda images: model.bits_per_dim(images, seed=[3, 1]))(images)
    np.testing.assert_allclose(bpd, inline.numpy(), rtol=1e-12)
    inline_z = tf.function(lambda x: model.encode(x))(x)
    np.testing.assert_allclose(model.encode(x).numpy(), inline_z.numpy(), rtol=1e-12)


def test_class_conditional_labels_are_a_relaxed_tensor_argument():
    model = _real_nvp(num_classes=3)
    for labels in ([0, 2, 1], [1, 1, 0, 2, 2], [2, 0, 1]):
        model.log_prob(_images(len(labels)), labels=labels)
        model.sample(len(labels), seed=[1, len(labels)], labels=labels)
    assert _traces(model, "log_prob") == [1] and _traces(model, "sample") == [1]

    x, labels = _images(3), tf.constant([0, 2, 1])
    inline = tf.function(lambda x, y: model.log_prob(x, labels=y))(x, labels)
    np.testing.assert_allclose(model.log_prob(x, labels=labels).numpy(), inline.numpy(),
                               rtol=1e-12)
    other = model.log_prob(x, labels=[1, 0, 2]).numpy()
    assert np.abs(other - inline.numpy()).max() > 1e-3
    inline_sample = tf.function(lambda: model.sample(3, seed=[4, 5], labels=labels))()
    np.testing.assert_allclose(model.sample(3, seed=[4, 5], labels=labels).numpy(),
                               inline_sample.numpy(), rtol=1e-12)

    with pytest.raises(ValueError, match="batch shape"):
        model.log_prob(x, labels=[0, 1])
    with pytest.raises(ValueError, match="batch shape"):
        model.sample(3, labels=[0, 1])
    with pytest.raises(ValueError, match="pass labels="):
        model.sample(3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="num_classes=3"):
        model.log_prob(x, labels=[0, 3, 1])
    assert _traces(model, "log_prob") == [1] and _traces(model, "sample") == [1]


@pytest.mark.parametrize("make,shape", [
    (lambda: tfnvp.Glow(SHAPE, num_scales=2, steps_per_scale=1, hidden_channels=4,
                        dtype="float64"), SHAPE),
    (lambda: tfnvp.DenseRealNVP(5, hidden_dim=8, depth=1, num_couplings=3, batch_norm=True,
                                dtype="float64"), (5,)),
], ids=["glow", "dense"])
def test_glow_and_dense_real_nvp_compile_their_eager_calls(make, shape):
    model = make()
    perturb_weights(model.conditioners + model.statistics, scale=0.2)
    low, high = (8.0, 248.0) if len(shape) == 3 else (-2.0, 2.0)
    for batch in (3, 5, 3):
        x = tf.random.uniform((batch,) + shape, low, high, dtype=tf.float64)
        log_prob = model.log_prob(x).numpy()
        z = model.encode(x)
        np.testing.assert_allclose(model.decode(tf.identity(z)).numpy(), x.numpy(), atol=1e-8)
        model.sample(batch, seed=[batch, 0])
    for method in ("log_prob", "encode", "decode", "sample"):
        assert _traces(model, method) == [1], method
    via_distribution = tf.function(lambda x: model.distribution.log_prob(x))(x).numpy()
    np.testing.assert_allclose(log_prob, via_distribution, rtol=1e-12)
    inline = tf.function(lambda: model.sample(3, seed=[3, 0]))().numpy()
    np.testing.assert_allclose(model.sample(3, seed=[3, 0]).numpy(), inline, rtol=1e-12)


def test_eager_bad_input_raises_the_clear_errors_before_compiling():
    model = _real_nvp(dtype="float32")
    nan = np.full((2,) + SHAPE, 100.0, np.float32)
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="pixel values contain NaN or Inf"):
        model.log_prob(nan)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"found a value >= 256"):
        model.log_prob(np.full((2,) + SHAPE, 300.0, np.float32))
    with pytest.raises(ValueError, match="Expected images with 3 channels"):
        model.encode(np.zeros((2, 8, 8, 2), np.float32))
    with pytest.raises(ValueError, match="Expected images with 3 channels"):
        model.bits_per_dim(np.zeros((2, 8, 8, 2), np.uint8))
    with pytest.raises(TypeError, match="use bits_per_dim"):
        model.log_prob(np.zeros((2,) + SHAPE, np.uint8))
    with pytest.raises(TypeError, match="Expected uint8 images"):
        model.bits_per_dim(np.zeros((2,) + SHAPE, np.float32))
    with pytest.raises(ValueError, match="needs a non-empty batch"):
        model.log_prob(np.zeros(SHAPE, np.float32), training=True)
    # NaN and infinite temperatures drew all-NaN images (issue 30); refused like -1.
    for temperature in (-1.0, float("nan"), float("inf"), np.float32(np.nan),
                        tf.constant(np.inf)):
        with pytest.raises(ValueError, match="temperature must be a finite non-negative number"):
            model.sample(2, temperature=temperature)
    with pytest.raises(ValueError, match="num_samples must be non-negative"):
        model.sample(-1)
    with pytest.raises(ValueError, match="Expected images with 3 channels"):
        model.sample(2, image_shape=(8, 8, 2))
    with pytest.raises(ValueError, match="labels were given"):
        model.log_prob(np.zeros((2,) + SHAPE, np.float32), labels=[0, 1])
    assert model.compiled_functions() == {}  # Every check ran before compiling anything.


def test_kept_functions_are_not_model_state():
    model = _real_nvp(dtype="float32")
    children = set(model._trackable_children(save_type="checkpoint"))
    variables = len(model.variables)
    config = model.get_config()
    x = _images(2, tf.float32)
    model.log_prob(x), model.sample(2, seed=[1, 1]), model.encode(x)
    assert len(model.compiled_functions()) == 3
    assert set(model._trackable_children(save_type="checkpoint")) == children
    assert len(model.variables) == variables and model.get_config() == config


def test_a_flow_for_a_new_image_size_first_built_inside_a_trace_serves_later_calls():
    """The per-shape flow is cached: built inside one function's trace, its constants
    must still be usable by the next compiled (or eager) call (regression: 'ones:0 is
    out of scope')."""
    model = _real_nvp()
    big = tf.random.uniform((2, 16, 16, SHAPE[-1]), 8.0, 248.0, dtype=tf.float64, seed=3)
    traced = model.decode(model.encode(tf.identity(big)))  # compiled calls build the 16x16 flow
    np.testing.assert_allclose(traced.numpy(), big.numpy(), rtol=1e-9, atol=1e-9)
    direct = model.distribution_for((16, 16, SHAPE[-1])).log_prob(tf.identity(big))
    np.testing.assert_allclose(model.log_prob(tf.identity(big)).numpy(), direct.numpy(),
                               rtol=1e-12)
