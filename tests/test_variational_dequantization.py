"""Variational dequantization (issue 11 item 1): the dequantizer flow is exact, log q is
its change of variables, the model owns and trains it, and bits_per_dim's
importance-weighted bound is the log-mean-exp of single-sample bounds."""

import math

import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf

import tfnvp
from tfnvp.dequantizers.variational import dequantization_flow

from bijector_checks import assert_exact_bijector, numerical_log_det, perturb_weights


def _dequantizer(channels=2, dtype="float64", scale=0.3,
                 num_classes=None) -> tfnvp.VariationalDequantizer:
    deq = tfnvp.VariationalDequantizer(channels, num_couplings=3, hidden_channels=6,
                                       context_channels=3, num_classes=num_classes, dtype=dtype)
    deq.dequantize(np.zeros((1, 4, 4, channels), np.uint8), seed=(0, 0),  # Builds the weights.
                   context=None if num_classes is None else _one_hot([0], num_classes, dtype))
    perturb_weights([deq], scale=scale)
    return deq


def _one_hot(labels, num_classes=3, dtype="float64") -> tf.Tensor:
    return tf.one_hot(labels, num_classes, dtype=dtype)


def _images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def test_dequantizer_flow_is_exact_given_the_context():
    deq = _dequantizer()
    context = deq.context(_images((3, 4, 4, 2)))
    eps = tf.random.stateless_normal((3, 4, 4, 2), seed=(1, 2), dtype=tf.float64)
    worst = assert_exact_bijector(deq.bijector, eps, event_ndims=3, context=context)
    assert worst["log_det_vs_numerical"] < 1e-6
    # The context reaches the couplings: another image, another u.
    other = deq.context(_images((3, 4, 4, 2), seed=1))
    assert np.abs(deq.bijector.forward(eps, context=other).numpy()
                  - deq.bijector.forward(eps, context=context).numpy()).max() > 1e-3
    # A dequantization flow maps onto (0, 1).
    u = deq.bijector.forward(3.0 * eps, context=context).numpy()
    assert u.min() > 0.0 and u.max() < 1.0


@pytest.mark.parametrize("num_classes", [None, 3])
def test_log_q_is_the_change_of_variables_of_the_seeded_noise(num_classes):
    deq = _dequantizer(num_classes=num_classes)
    images = _images((3, 4, 4, 2))
    labels = None if num_classes is None else _one_hot([2, 0, 1])
    x, log_q = deq.dequantize(images, seed=(5, 6), context=labels)
    x_again, log_q_again = deq.dequantize(images, seed=(5, 6), context=labels)
    np.testing.assert_array_equal(x_again.numpy(), x.numpy())  # A pure function of the seed.
    context = deq.context(images, labels=labels)
    # A fresh tensor: TFP's cache would answer forward(eps) with the constant it came from.
    eps = tf.identity(deq.bijector.inverse(tf.constant(x.numpy() - images), context=context))
    log_det = numerical_log_det(lambda t: deq.bijector.forward(t, context=context), eps)
    expected = scipy.stats.logistic.logpdf(eps.numpy()).reshape(3, -1).sum(1) - log_det
    np.testing.assert_allclose(log_q.numpy(), expected, atol=1e-6)


def test_class_conditional_dequantizer_is_exact_and_sees_the_labels():
    deq = _dequantizer(num_classes=3)
    images = _images((3, 4, 4, 2))
    context = deq.context(images, labels=_one_hot([2, 0, 1]))
    eps = tf.random.stateless_normal((3, 4, 4, 2), seed=(1, 2), dtype=tf.float64)
    worst = assert_exact_bijector(deq.bijector, eps, event_ndims=3, context=context)
    assert worst["log_det_vs_numerical"] < 1e-6
    # Same images, same seed, other labels: another u and another log q.
    x, log_q = deq.dequantize(images, seed=(5, 6), context=_one_hot([2, 0, 1]))
    x_other, log_q_other = deq.dequantize(images, seed=(5, 6), context=_one_hot([0, 1, 2]))
    assert np.abs(x.numpy() - x_other.numpy()).max() > 1e-3
    assert np.abs(log_q.numpy() - log_q_other.numpy()).min() > 1e-6
    # Batch shapes beyond one axis: the labels follow the images' batch axes.
    images_2d, labels_2d = _images((2, 3, 4, 4, 2)), _one_hot([[2, 0, 1], [1, 1, 0]])
    x_2d, log_q_2d = deq.dequantize(images_2d, seed=(5, 6), context=labels_2d)
    flat_x, flat_log_q = deq.dequantize(images_2d.reshape(6, 4, 4, 2), seed=(5, 6),
                                        context=tf.reshape(labels_2d, [6, 3]))
    np.testing.assert_allclose(x_2d.numpy().reshape(6, 4, 4, 2), flat_x.numpy(), rtol=1e-12)
    np.testing.assert_allclose(log_q_2d.numpy().reshape(6), flat_log_q.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="class-conditional"):
        deq.dequantize(images, seed=(5, 6))
    with pytest.raises(ValueError, match=r"one-hot labels of shape \[batch\.\.\., 3\]"):
        deq.dequantize(images, seed=(5, 6), context=_one_hot([2, 0, 1], num_classes=4))
    with pytest.raises(ValueError, match="unconditional"):
        _dequantizer().dequantize(images, seed=(5, 6), context=_one_hot([2, 0, 1]))
    with pytest.raises(ValueError, match="num_classes"):
        tfnvp.VariationalDequantizer(2, num_classes=0)


def test_fresh_dequantizer_is_exactly_uniform_dequantization():
    # Zero-gain coupling outputs are identity couplings: u = sigmoid(eps) with eps
    # ~ Logistic(0, 1) is U(0, 1), log q = 0, and with the same seed u is
    # tfnvp.dequantize's noise: the variational model starts as the uniform one.
    deq = tfnvp.VariationalDequantizer(1, dtype="float64")
    images = _images((16, 8, 8, 1))
    x, log_q = deq.dequantize(images, seed=tf.constant([3, 4], tf.int64))  # The trainer's seeds.
    np.testing.assert_allclose(log_q.numpy(), 0.0, atol=1e-10)
    np.testing.assert_allclose(x.numpy(), tfnvp.dequantize(images, seed=(3, 4),
                                                           dtype=tf.float64).numpy(), atol=1e-12)
    model = _model("variational")
    perturb_weights(model.conditioners + model.statistics, scale=0.2)
    images = _images((5, 4, 4, 1))
    log_p = model.log_prob(tfnvp.dequantize(images, seed=(7, 11), dtype=tf.float64))
    np.testing.assert_allclose(model.bits_per_dim(images, seed=(7, 11)).numpy(),
                               tfnvp.bits_per_dim_from_log_prob(log_p, 16).numpy(), rtol=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_values_stay_in_their_bins_for_any_batch_shape(dtype):
    deq = _dequantizer(channels=1, dtype=dtype, scale=2.0)
    images = _images((2, 3, 4, 4, 1))
    images[0] = 255
    x, log_q = deq.dequantize(images, seed=(7, 8))
    assert x.dtype == tf.as_dtype(dtype) and log_q.dtype == tf.as_dtype(dtype)
    assert x.shape == images.shape and log_q.shape == (2, 3)
    x = x.numpy()
    assert np.all((x >= images) & (x < images.astype(dtype) + 1)) and np.all(np.isfinite(log_q))
    with pytest.raises(ValueError, match="channels|shape"):
        deq.dequantize(_images((2, 4, 4, 3)))


def _model(dequantization, dtype="float64", **kwargs) -> tfnvp.RealNVP:
    return tfnvp.RealNVP((4, 4, 1), num_scales=2, num_res_blocks=1, hidden_channels=4,
                         dtype=dtype, dequantization=dequantization, **kwargs)


def test_uniform_single_sample_bound_is_the_uniform_bits_per_dim():
    model = _model("uniform")
    perturb_weights(model.conditioners + model.statistics, scale=0.2)
    images = _images((5, 4, 4, 1))
    log_p = model.log_prob(tfnvp.dequantize(images, seed=(7, 11), dtype=tf.float64))
    expected = tfnvp.bits_per_dim_from_log_prob(log_p, 16).numpy()
    # Equal up to float64 rounding (another compiled graph: 1 ulp).
    np.testing.assert_allclose(model.bits_per_dim(images, seed=(7, 11), num_samples=1).numpy(),
                               expected, rtol=1e-14)
    assert "dequantization" not in model.get_config()  # Uniform configurations are unchanged.


@pytest.mark.parametrize("dequantization", ["uniform", "variational"])
def test_importance_weighted_bound_is_log_mean_exp_of_single_samples(dequantization):
    model = _model(dequantization)
    perturb_weights(model.conditioners + model.statistics + [model.dequantizer], scale=0.2)
    images = _images((3, 4, 4, 1))
    k, dims = 4, 16
    seeds = tf.random.experimental.stateless_split(tf.constant([3, 9]), k)
    singles = np.stack([model.bits_per_dim(images, seed=s).numpy() for s in seeds])
    log_w = -singles * dims * math.log(2.0)  # log p(x + u_k) - log q(u_k | x)
    expected = -(scipy.special.logsumexp(log_w, axis=0) - math.log(k)) / (dims * math.log(2.0))
    bound = model.bits_per_dim(images, seed=[3, 9], num_samples=k).numpy()
    np.testing.assert_allclose(bound, expected, rtol=1e-12)
    # Jensen, for these very samples: the IW bound is at most the mean single-sample bound.
    assert np.all(bound <= singles.mean(0) + 1e-12) and np.all(bound < singles.max(0))
    with pytest.raises(ValueError, match="num_samples"):
        model.bits_per_dim(images, num_samples=0)


def test_variational_model_trains_and_owns_its_dequantizer(tmp_path):
    # Class-conditional: q(u | x, y) also owns the class features E.
    model = _model("variational", dtype="float32", num_classes=3)
    deq = model.dequantizer
    assert isinstance(deq, tfnvp.VariationalDequantizer)
    assert deq.num_classes == 3 and deq.class_context.built
    owned = {id(v) for v in model.trainable_variables}
    assert deq.trainable_variables and all(id(v) in owned for v in deq.trainable_variables)
    perturb_weights([deq], scale=0.3)
    images, labels = _images((6, 4, 4, 1)), tf.constant([0, 1, 2, 0, 1, 2])
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(model.nll(images, training=True, seed=(1, 2), labels=labels))
    grads = tape.gradient(loss, deq.trainable_variables)
    missing = [v.path for v, g in zip(deq.trainable_variables, grads)
               if g is None or not np.any(g.numpy())]
    assert not missing, missing
    # The bound uses q(u | x, y): the model's log q is the dequantizer's for these labels.
    nll = model.nll(images, seed=(4, 5), labels=labels).numpy()
    x, log_q = deq.dequantize(images, seed=(4, 5), context=_one_hot(labels, dtype="float32"))
    np.testing.assert_allclose(nll, log_q.numpy() - model.log_prob(x, labels=labels).numpy(),
                               rtol=1e-5, atol=1e-4)
    _, log_q_other = deq.dequantize(images, seed=(4, 5),
                                    context=_one_hot((labels + 1) % 3, dtype="float32"))
    assert np.abs(log_q.numpy() - log_q_other.numpy()).min() > 1e-5
    # The configuration declares it; a checkpoint restores it into a fresh model.
    config = model.get_config()
    assert config["dequantization"] == "variational"
    clone = tfnvp.RealNVP.from_config(config)
    assert isinstance(clone.dequantizer, tfnvp.VariationalDequantizer)
    path = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=clone).restore(path).assert_consumed()
    np.testing.assert_array_equal(clone.bits_per_dim(images, seed=(4, 5), labels=labels).numpy(),
                                  model.bits_per_dim(images, seed=(4, 5), labels=labels).numpy())
    # Recalibration dequantizes with the labels, and asks for them.
    with pytest.raises(ValueError, match="pass labels="):
        model.recalibrate([images], num_batches=1)
    assert model.recalibrate([(images, labels)], num_batches=1) == 1
    with pytest.raises(ValueError, match="dequantization"):
        _model("logistic")


def test_glow_takes_a_variational_dequantizer():
    model = tfnvp.Glow((4, 4, 2), num_scales=1, steps_per_scale=1, hidden_channels=4,
                       dequantization="variational", dequantizer_channels=6)
    assert isinstance(model.dequantizer, tfnvp.VariationalDequantizer)
    assert (model.dequantizer.hidden_channels, model.dequantizer.context_channels) == (6, 3)
    assert model.get_config()["dequantizer_channels"] == 6
    assert tfnvp.Glow.from_config(model.get_config()).get_config() == model.get_config()
    bpd = model.bits_per_dim(_images((2, 4, 4, 2)), seed=(1, 1), num_samples=2).numpy()
    assert bpd.shape == (2,) and np.all(np.isfinite(bpd))


def test_dequantizer_channels_default_and_bad_value():
    model = _model("variational")
    assert (model.dequantizer.hidden_channels, model.dequantizer.context_channels) == (32, 16)
    assert "dequantizer_channels" not in model.get_config()  # Defaults stay unrecorded.
    with pytest.raises(ValueError, match="dequantizer_channels"):
        _model("variational", dequantizer_channels=1)


def test_dequantization_flow_order():
    # forward = sigmoid o coupling_{n-1} o ... o coupling_0 (data direction eps -> u).
    deq = _dequantizer()
    flow = dequantization_flow(deq.conditioners)
    names = [b.name for b in flow.bijectors]
    assert names[0] == "sigmoid" and names[1:] == [f"dequantization_coupling_{k}"
                                                   for k in (2, 1, 0)]


def test_recalibration_dequantizes_uint8_batches_with_the_models_dequantizer():
    model = _model("variational", dtype="float32")
    norms = model.batch_norm_layers()
    before = [v.numpy().copy() for layer in norms for v in layer.non_trainable_weights]
    batches = [_images((8, 4, 4, 1), seed=s) for s in (1, 2)]
    assert model.recalibrate(batches, num_batches=2) == 2
    after = [v.numpy() for layer in norms for v in layer.non_trainable_weights]
    assert any(np.abs(a - b).max() > 1e-6 for a, b in zip(after, before))
