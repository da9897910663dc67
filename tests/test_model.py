"""RealNVP: the whole flow's exactness, closed-form density, gradients, API and errors."""

import collections
import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf
import tensorflow_probability as tfp

import tfnvp
from tfnvp.nets import shared_body

from bijector_checks import assert_exact_bijector, perturb_weights

ALPHA = 0.05


def _perturbed(image_shape=(4, 4, 2), num_scales=2, dtype="float64", **kwargs) -> tfnvp.RealNVP:
    model = tfnvp.RealNVP(image_shape, num_scales=num_scales, num_res_blocks=1,
                          hidden_channels=4, dtype=dtype, **kwargs)
    perturb_weights(model.conditioners + model.statistics, scale=0.2)
    return model


# Width of the logit map's p interval: p = alpha + width * x / 256.
LOGIT_WIDTH = {"symmetric": 1 - 2 * ALPHA, "asymmetric": 1 - ALPHA}


def _logit_normal_log_prob(x: np.ndarray, logit_map: str = "symmetric") -> np.ndarray:
    """Independent closed form: y = logit(alpha + width x/256) ~ N(0, I)."""
    width = LOGIT_WIDTH[logit_map]
    p = ALPHA + width * x / 256.0
    per_pixel = (scipy.stats.norm.logpdf(scipy.special.logit(p)) - np.log(p) - np.log1p(-p)
                 + np.log(width / 256.0))
    return per_pixel.reshape(x.shape[0], -1).sum(axis=1)


@pytest.mark.parametrize("image_shape,num_scales,graph_mode,options", [
    ((4, 4, 2), 2, True, {}),
    ((8, 8, 1), 3, False, {}),
    ((8, 8, 1), 3, False, dict(factor_out="channel", skip_connections=False,
                               logit_map="asymmetric")),
])
def test_whole_flow_exact_against_numerical_jacobian(image_shape, num_scales, graph_mode, options):
    model = _perturbed(image_shape, num_scales, **options)
    bijector = model.bijector
    x = tf.random.uniform((2,) + image_shape, 8.0, 248.0, dtype=tf.float64)
    z = bijector.inverse(x)
    # Perturbed weights: far from the logit-only flow.
    logit_only = tfnvp.bijectors.LogitPreprocess(
        symmetric=options.get("logit_map", "symmetric") == "symmetric").inverse(x)
    assert np.abs(z.numpy() - logit_only.numpy()).max() > 0.1
    errors = assert_exact_bijector(bijector, tf.identity(z), event_ndims=3, graph_mode=graph_mode)
    print(f"whole flow {image_shape} x {num_scales} scales {options}: worst errors {errors}")
    assert errors["log_det_vs_numerical"] < 1e-6 and errors["round_trip"] < 1e-9


def test_log_prob_is_base_plus_log_det():
    model = _perturbed()
    x = tf.random.uniform((3, 4, 4, 2), 0.0, 256.0, dtype=tf.float64)
    z = model.encode(x).numpy()
    ildj = model.bijector.inverse_log_det_jacobian(tf.identity(x), event_ndims=3).numpy()
    base = scipy.stats.norm.logpdf(z).reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(model.log_prob(x).numpy(), base + ildj, rtol=1e-12)


@pytest.mark.parametrize("logit_map", ["symmetric", "asymmetric"])
def test_new_model_is_the_closed_form_logit_normal(logit_map):
    model = tfnvp.RealNVP((8, 8, 3), num_scales=2, num_res_blocks=1, hidden_channels=4,
                          batch_norm=False, dtype="float64", logit_map=logit_map)
    x = np.random.default_rng(1).uniform(0, 256, size=(4, 8, 8, 3))
    np.testing.assert_allclose(model.log_prob(x).numpy(), _logit_normal_log_prob(x, logit_map),
                               rtol=1e-12)
    p = ALPHA + LOGIT_WIDTH[logit_map] * x / 256.0
    np.testing.assert_allclose(model.encode(x).numpy(), scipy.special.logit(p), atol=1e-12)


@pytest.mark.parametrize("logit_map", ["symmetric", "asymmetric"])
def test_bits_per_dim_known_answer(logit_map):
    model = tfnvp.RealNVP((4, 4, 1), num_scales=2, num_res_blocks=1, hidden_channels=4,
                          batch_norm=False, dtype="float64", logit_map=logit_map)
    images = np.random.default_rng(2).integers(0, 256, size=(5, 4, 4, 1), dtype=np.uint8)
    images[0] = 255  # saturated pixels: finite under both maps
    seed = (7, 11)
    noise = tf.random.stateless_uniform(images.shape, seed=seed, dtype=tf.float64).numpy()
    expected = -_logit_normal_log_prob(images + noise, logit_map) / (16 * math.log(2.0))
    np.testing.assert_allclose(model.bits_per_dim(images, seed=seed).numpy(), expected, rtol=1e-12)
    # Dequantization noise is in [0, 1): bits/dim of a density on [0, 256)^D.
    assert noise.min() >= 0.0 and noise.max() < 1.0
    # A uniform density on [0, 256)^D is exactly 8 bits/dim.
    uniform = tf.fill([2], -16 * math.log(256.0))
    np.testing.assert_allclose(tfnvp.bits_per_dim_from_log_prob(uniform, 16).numpy(), [8.0, 8.0])


def test_every_weight_gets_a_gradient():
    model = _perturbed(dtype="float32")
    x = tf.random.uniform((8, 4, 4, 2), 0.0, 256.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.nll(x, training=True))
    grads = tape.gradient(loss, model.trainable_variables)
    keras_trainable = [w for layer in model.conditioners for w in layer.trainable_weights]
    assert len(model.trainable_variables) == len(keras_trainable) > 0
    missing = [v.path for v, g in zip(model.trainable_variables, grads)
               if g is None or not np.any(g.numpy())]
    assert not missing, f"weights without gradient: {missing}"


def test_each_conditioner_runs_once_and_statistics_update_once(monkeypatch):
    monkeypatch.setattr(shared_body, "ENABLED", False)  # Traces counted per body, inline.
    model = _perturbed(dtype="float32")
    calls = []
    for conditioner in model.conditioners:
        original = conditioner.body.call

        def counted(*args, _original=original, **kwargs):
            calls.append(1)
            return _original(*args, **kwargs)
        conditioner.body.call = counted
    stats = model.statistics[0]
    before = stats.moving_mean.numpy().copy()
    norms = model.batch_norm_layers()  # bijectors' and conditioners' statistics
    counts = np.array([float(norm.num_updates) for norm in norms])

    @tf.function
    def train_log_prob(x):
        return model.log_prob(x, training=True)
    x = tf.random.uniform((8, 4, 4, 2), 0.0, 256.0)
    for calls_so_far in (1, 2):
        train_log_prob(x)
        assert len(calls) == len(model.conditioners)  # traced once
        # Every batch norm updated its (debiased) averages once per call.
        np.testing.assert_allclose([float(norm.num_updates) for norm in norms],
                                   counts + calls_so_far, rtol=1e-6)
    assert np.abs(stats.moving_mean.numpy() - before).max() > 0


@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "tf_function"])
def test_the_cache_never_serves_one_modes_result_to_the_other(compiled, monkeypatch):
    """Same tensor object, training then evaluation: two different, correct answers.

    The mode is a call argument (TFP bijector kwargs, part of the cache key):
    each call runs every conditioner once, the training call updates every
    batch norm exactly once, and each result equals an uncached computation.
    """
    monkeypatch.setattr(shared_body, "ENABLED", False)  # Traces counted per body, inline.
    model = _perturbed(dtype="float64")
    dist = model.distribution
    x = tf.random.uniform((8, 4, 4, 2), 0.0, 256.0, dtype=tf.float64)
    norms = model.batch_norm_layers()
    for norm in norms:  # Past the debiasing: an update blends, it does not replace.
        norm.num_updates.assign(50.0)
    state = model.non_trainable_variables
    saved = [tf.identity(v) for v in state]
    train_expected = model.log_prob(x, training=True).numpy()  # fresh tensor inside
    for variable, value in zip(state, saved):
        variable.assign(value)
    counts = np.array([float(norm.num_updates) for norm in norms])
    calls = [0] * len(model.conditioners)
    for i, conditioner in enumerate(model.conditioners):
        def counted(*args, _original=conditioner.body.call, _i=i, **kwargs):
            calls[_i] += 1
            return _original(*args, **kwargs)
        conditioner.body.call = counted

    def both(x):
        train = dist.log_prob(x, bijector_kwargs=dict(training=True, context=None))
        evaluation = dist.log_prob(x, bijector_kwargs=dict(training=False, context=None))
        return train, evaluation
    train, evaluation = (tf.function(both) if compiled else both)(x)
    assert calls == [2] * len(model.conditioners)  # once per mode (and per trace)
    np.testing.assert_allclose([float(norm.num_updates) for norm in norms], counts + 1)
    # Evaluation after the update: running statistics as they are now.
    np.testing.assert_allclose(train.numpy(), train_expected, rtol=1e-12)
    np.testing.assert_allclose(evaluation.numpy(), model.log_prob(x).numpy(), rtol=1e-12)
    assert np.abs(train.numpy() - evaluation.numpy()).min() > 1e-3


def test_no_bijector_holds_a_mode():
    model = _perturbed(dtype="float32")
    for bijector in _all_bijectors(model.bijector):
        assert not hasattr(bijector, "training"), bijector.name
    assert not hasattr(model, "training_mode") and not hasattr(model, "mode")


def _all_bijectors(bijector):
    yield bijector
    for inner in getattr(bijector, "bijectors", ()):
        yield from _all_bijectors(inner)
    for attribute in ("inner", "bijector"):
        if isinstance(getattr(bijector, attribute, None), tfp.bijectors.Bijector):
            yield from _all_bijectors(getattr(bijector, attribute))


def test_nll_and_regularization_loss_are_the_objective():
    model = _perturbed(dtype="float64")
    images = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 2)).astype(np.uint8)
    x = tfnvp.dequantize(images, seed=(5, 6), dtype=tf.float64)
    np.testing.assert_allclose(model.nll(images, seed=(5, 6)).numpy(),
                               -model.log_prob(x).numpy(), rtol=1e-12)
    np.testing.assert_allclose(model.nll(x).numpy(), -model.log_prob(x).numpy(), rtol=1e-12)
    np.testing.assert_allclose(model.bits_per_dim(images, seed=(5, 6)).numpy(),
                               -model.log_prob(x).numpy() / (32 * math.log(2.0)), rtol=1e-12)
    gains = model.regularized_weights()
    # Weight-norm gains: in, 2 per block, 2 skips, out; and the s-scales of the 7 checkerboard
    # couplings (3 + 4; the release's penalty, conditioner_form="release").
    scales = [c.scale for c in model.conditioners if c.regularized_scale]
    assert len(scales) == 7 and all(id(s) in {id(g) for g in gains} for s in scales)
    assert len(gains) == 6 * len(model.conditioners) + len(scales)
    total = sum(float(np.sum(np.square(g.numpy()))) for g in gains)
    assert float(model.regularization_loss()) == pytest.approx(5e-5 * total, rel=1e-6)
    x_out, log_q = model.dequantizer.dequantize(images, seed=(5, 6))
    np.testing.assert_array_equal(x_out.numpy(), x.numpy())
    np.testing.assert_array_equal(log_q.numpy(), np.zeros(3))


def test_weight_scale_penalty_gradient_is_exactly_twice_the_scales_in_few_ops():
    """The penalty ``sum g^2`` (float32) has the gradient ``2 g`` exactly, and it and its
    gradient take two ops per weight beyond reading and casting it (``L2Loss`` and one
    ``Mul``), not the ten of ``reduce_sum(square(g))`` and its gradient (issue 27)."""
    model = _perturbed(dtype="float64")
    gains = model.regularized_weights()

    @tf.function(autograph=False)
    def penalty_and_gradients():
        with tf.GradientTape() as tape:
            penalty = model.weight_scale_penalty()
        return penalty, tape.gradient(penalty, gains)

    penalty, grads = penalty_and_gradients()
    scales = [g.numpy().astype(np.float32) for g in gains]
    assert float(penalty) == pytest.approx(
        sum(float(np.sum(np.square(s.astype(np.float64)))) for s in scales), rel=1e-6)
    for scale, grad in zip(scales, grads):
        np.testing.assert_array_equal(grad.numpy(), 2.0 * scale.astype(np.float64))
    graph = penalty_and_gradients.get_concrete_function().graph
    per_weight = collections.Counter(op.type for op in graph.get_operations())
    # Per weight: its captured handle, the read and its identity, the cast to float32 and the
    # gradient's back, L2Loss and Mul (reduce_sum(square(g)) and its gradient: 14).
    assert per_weight["L2Loss"] == len(gains)
    assert len(graph.get_operations()) <= 7 * len(gains) + 20, per_weight


def test_sample_encode_decode_and_temperature():
    model = _perturbed(dtype="float32")
    samples = model.sample(6, temperature=0.7, seed=(1, 2))
    assert samples.shape == (6, 4, 4, 2) and np.all(np.isfinite(samples.numpy()))
    np.testing.assert_array_equal(samples.numpy(), model.sample(6, temperature=0.7, seed=(1, 2)).numpy())
    x = tf.random.uniform((3, 4, 4, 2), 1.0, 255.0)
    np.testing.assert_allclose(model.decode(model.encode(x)).numpy(), x.numpy(), atol=1e-3)
    fresh = tfnvp.RealNVP((4, 4, 1), num_scales=2, num_res_blocks=1, hidden_channels=4,
                          batch_norm=False)
    # Temperature 0 decodes z = 0: every pixel is forward(0) = 256 (1/2 - alpha) / (1 - 2 alpha),
    # the middle of the range under the symmetric logit map.
    np.testing.assert_allclose(fresh.sample(2, temperature=0.0).numpy(), 128.0, rtol=1e-6)


@pytest.mark.parametrize("factor_out", ["checkerboard", "channel"])
def test_latent_scale_index_is_the_flow_layout(factor_out):
    """Changing the weights of scales >= k changes exactly the latents with index >= k."""
    model = _perturbed((8, 8, 1), num_scales=3, factor_out=factor_out)
    index = model.latent_scale_index()
    assert index.shape == (8, 8, 1)
    counts = np.bincount(index.ravel(), minlength=3) / index.size
    np.testing.assert_allclose(counts, [0.5, 0.25, 0.25])
    rows, cols = np.indices((8, 8))
    finest = index[..., 0] == 0
    if factor_out == "checkerboard":  # one colour leaves; a quincunx lattice goes on
        np.testing.assert_array_equal(finest, (rows + cols) % 2 == 1)
    else:  # the top row of each 2x2 block leaves: alternate rows
        np.testing.assert_array_equal(finest, rows % 2 == 0)
    x = tf.random.uniform((2, 8, 8, 1), 8.0, 248.0, dtype=tf.float64)
    z = model.encode(x).numpy()
    # Data -> latent order: 6 couplings at scale 0, 6 at scale 1, 4 at scale 2.
    for first, level in ((6, 1), (12, 2)):
        perturb_weights(model.conditioners[first:] + model.statistics[first:], scale=0.2)
        z_new = model.encode(tf.identity(x)).numpy()
        changed = np.abs(z_new - z) > 1e-9
        np.testing.assert_array_equal(changed.any(axis=0), index >= level)
        z = z_new


def test_latent_scale_index_and_other_sizes():
    model = _perturbed((8, 8, 1), num_scales=3, dtype="float32")
    big = tf.random.uniform((2, 16, 16, 1), 0.0, 256.0)
    assert np.all(np.isfinite(model.log_prob(big).numpy()))
    assert model.sample(1, image_shape=(16, 16, 1)).shape == (1, 16, 16, 1)
    assert model.distribution_for((16, 16, 1)).event_shape == (16, 16, 1)


def test_distribution_properties():
    model = _perturbed(dtype="float32")
    dist = model.distribution
    assert dist.event_shape == (4, 4, 2) and dist.batch_shape == ()
    x = tf.random.uniform((3, 4, 4, 2), 0.0, 256.0)
    np.testing.assert_allclose(dist.log_prob(x).numpy(), model.log_prob(x).numpy(), rtol=1e-5)
    assert dist.sample(2, seed=(1, 2)).shape == (2, 4, 4, 2)


@pytest.mark.parametrize("bad,error,message", [
    (np.zeros((4, 4), np.float32), ValueError, "rank 2"),
    (np.zeros((1, 4, 4, 3), np.float32), ValueError, "2 channels"),
    (np.zeros((1, 5, 5, 2), np.float32), ValueError, "divisible by 2"),
    (np.zeros((1, 4, 4, 2), np.uint8), TypeError, "bits_per_dim"),
    (np.full((1, 4, 4, 2), 300.0, np.float32), tf.errors.InvalidArgumentError, r"\[0, 256\)"),
    (np.full((1, 4, 4, 2), -1.0, np.float32), tf.errors.InvalidArgumentError, "negative"),
    (np.full((1, 4, 4, 2), np.nan, np.float32), tf.errors.InvalidArgumentError, "NaN"),
])
def test_bad_input_names_the_problem(bad, error, message):
    model = _perturbed(dtype="float32")
    with pytest.raises(error, match=message):
        model.log_prob(bad)


def test_bad_input_to_other_methods():
    model = _perturbed(dtype="float32")
    with pytest.raises(TypeError, match="uint8"):
        model.bits_per_dim(np.zeros((1, 4, 4, 2), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN"):
        model.decode(np.full((1, 4, 4, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="temperature"):
        model.sample(2, temperature=-1.0)


def test_bad_construction():
    with pytest.raises(ValueError, match="divisible by"):
        tfnvp.RealNVP((6, 6, 1), num_scales=3)
    with pytest.raises(ValueError, match="float32 or float64"):
        tfnvp.RealNVP((4, 4, 1), dtype="int32")
    with pytest.raises(ValueError, match="Unknown paper configuration"):
        tfnvp.RealNVP.from_paper("mnist-xl")
    with pytest.raises(ValueError, match="logit_map must be one of"):
        tfnvp.RealNVP((4, 4, 1), logit_map="sigmoid")
    with pytest.raises(ValueError, match="factor_out must be one of"):
        tfnvp.RealNVP((4, 4, 1), factor_out="rows")


def test_paper_configurations_follow_section_4_1():
    """Last recursion on 4x4 (CIFAR-10: one downscale); blocks and feature maps as stated."""
    expected = {"cifar10": (32, 2, 8, 64), "imagenet32": (32, 4, 4, 32),
                "imagenet64": (64, 5, 2, 32), "celeba": (64, 5, 2, 32), "lsun": (64, 5, 2, 32)}
    assert set(tfnvp.PAPER_CONFIGS) == set(expected)
    for name, (size, scales, blocks, channels) in expected.items():
        config = tfnvp.PAPER_CONFIGS[name]
        assert config == dict(image_shape=(size, size, 3), num_scales=scales,
                              num_res_blocks=blocks, hidden_channels=channels), name
        if name != "cifar10":
            assert size // 2 ** (scales - 1) == 4, name
    # The built architecture: 3 + 3 couplings per scale, 4 at the last; widths double per scale.
    model = tfnvp.RealNVP.from_paper("imagenet32", hidden_channels=2, num_res_blocks=1)
    assert len(model.conditioners) == 6 * 3 + 4
    assert sorted({c.body.hidden_channels for c in model.conditioners}) == [2, 4, 8, 16]
    coarsest = model.conditioners[-1].body
    assert coarsest.skip_connections and len(coarsest.skips) == 2
    assert model.get_config()["factor_out"] == "checkerboard"
    assert model.get_config()["logit_map"] == "symmetric"


def test_paper_cifar10_configuration():
    model = tfnvp.RealNVP.from_paper("cifar10")
    params = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    # Section 4.1's CIFAR-10 model with skip connections, as in the widely used
    # port: about 19.6 M weights (README: 19.7 M; 18.6 M without skips).
    assert 0.85 * 19.6e6 < params < 1.15 * 19.6e6, params
    skip_params = sum(int(np.prod(v.shape)) for c in model.conditioners
                      for skip in c.body.skips for v in skip.trainable_weights)
    # Per conditioner: (blocks + 1) 1x1 convolutions of F -> F features (v, g, bias).
    widths = [c.body.hidden_channels for c in model.conditioners]
    assert sorted(set(widths)) == [64, 128]
    assert skip_params == sum(9 * (f * f + 2 * f) for f in widths)
    assert all(len(c.body.skips) == 9 for c in model.conditioners)
    assert model.get_config()["num_res_blocks"] == 8
