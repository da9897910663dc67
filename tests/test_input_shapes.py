"""Every rank, shape and batch size is handled or rejected with a ValueError naming the
expected shape: in the models' methods, in ``model.distribution`` and in the SavedModel."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import tfnvp

IMAGE = (8, 8, 1)


@pytest.fixture(scope="module")
def image_model() -> tfnvp.RealNVP:
    return tfnvp.RealNVP(IMAGE, num_scales=2, num_res_blocks=1, hidden_channels=4)


@pytest.fixture(scope="module")
def dense_model() -> tfnvp.DenseRealNVP:
    return tfnvp.DenseRealNVP(dim=4, hidden_dim=8, depth=2, num_couplings=3, batch_norm=True)


def _batch(model, n: int) -> tf.Tensor:
    shape = (n,) + tuple(model.event_shape)
    return tf.random.stateless_uniform(shape, seed=[1, 2], minval=1.0, maxval=255.0)


def _scorers(model):
    return {"model.log_prob": lambda x: model.log_prob(tf.identity(x)),
            "distribution.log_prob": lambda x: model.distribution.log_prob(tf.identity(x)),
            "encode": lambda x: model.encode(tf.identity(x))}


@pytest.mark.parametrize("which", ["image", "dense"])
def test_any_batch_shape_gives_the_batched_result(which, image_model, dense_model):
    model = image_model if which == "image" else dense_model
    x = _batch(model, 6)
    for name, score in _scorers(model).items():
        batched = score(x).numpy()
        single = score(x[0]).numpy()  # one unbatched event
        assert single.shape == batched.shape[1:], name
        np.testing.assert_allclose(single, batched[0], rtol=1e-5, atol=1e-3, err_msg=name)
        grid = score(tf.reshape(x, (2, 3) + tuple(model.event_shape))).numpy()  # two batch axes
        np.testing.assert_allclose(grid.reshape(batched.shape), batched, rtol=1e-5, atol=1e-3,
                                   err_msg=name)
        empty = score(x[:0]).numpy()
        assert empty.shape == (0,) + batched.shape[1:], name
    event = tuple(model.event_shape)
    assert model.distribution.sample().shape == event
    assert model.distribution.sample([2, 3]).shape == (2, 3) + event
    assert model.distribution.sample(0).shape == (0,) + event
    assert model.decode(tf.zeros(event)).shape == event
    assert np.isfinite(model.distribution.log_prob(model.distribution.sample()).numpy())


@pytest.mark.parametrize("shape", [(), (8,), (8, 8), (2, 8, 8, 3), (2, 4, 4, 1), (2, 8, 6, 1),
                                   (8, 8, 2), (2, 7, 8, 1)])
def test_wrong_image_shapes_are_rejected_naming_the_expected_shape(shape, image_model):
    x = tf.ones(shape) * 100.0
    with pytest.raises(ValueError, match=r"\[\.\.\., 8, 8, 1\] \(batch\.\.\., height, width, "
                                         r"channels\)"):
        image_model.distribution.log_prob(x)
    if len(shape) >= 3 and shape[-1] == 1 and shape[-3] % 2 == 0 and shape[-2] % 2 == 0:
        # Other even sizes are the same model at another resolution (appendix C).
        assert image_model.log_prob(x).shape == shape[:-3]
    else:
        with pytest.raises(ValueError, match=r"height, width, channels|channels|divisible"):
            image_model.log_prob(x)


@pytest.mark.parametrize("shape", [(), (3,), (2, 5)])
def test_wrong_vector_shapes_are_rejected(shape, dense_model):
    x = tf.ones(shape)
    for score in (dense_model.log_prob, dense_model.distribution.log_prob):
        with pytest.raises(ValueError, match=r"\[\.\.\., 4\]"):
            score(x)


@pytest.mark.parametrize("which", ["image", "dense"])
def test_training_mode_needs_a_non_empty_batch(which, image_model, dense_model):
    model = image_model if which == "image" else dense_model
    before = [w.numpy().copy() for w in model.weights]
    for x in (_batch(model, 0), _batch(model, 1)[0]):
        with pytest.raises(ValueError, match="non-empty batch of shape \\[batch, "):
            model.log_prob(x, training=True)
    for old, new in zip(before, model.weights):  # running statistics untouched
        np.testing.assert_array_equal(old, new.numpy())
    assert np.all(np.isfinite(model.log_prob(_batch(model, 4), training=True).numpy()))


def test_exported_signatures_handle_empty_batches_and_reject_wrong_shapes(image_model, tmp_path):
    export = pytest.importorskip("trainers.export")
    path = export.export_saved_model(image_model, str(tmp_path / "saved_model"))
    loaded = tf.saved_model.load(path)
    x = _batch(image_model, 3)
    assert loaded.log_prob(x[:0]).shape == (0,)
    assert loaded.encode(x[:0]).shape == (0,) + IMAGE
    assert loaded.decode(tf.zeros((0,) + IMAGE)).shape == (0,) + IMAGE
    assert loaded.sample(tf.constant(0), tf.constant(1.0), tf.constant([1, 2])).shape == \
        (0,) + IMAGE
    np.testing.assert_allclose(loaded.log_prob(x).numpy(), image_model.log_prob(x).numpy(),
                               rtol=1e-5)
    for bad in (x[0], tf.ones((2, 8, 8, 3)), tf.ones((2, 4, 4, 1))):
        with pytest.raises((ValueError, TypeError), match=r"None, 8, 8, 1"):
            loaded.log_prob(bad)
    serving = loaded.signatures["log_prob"]
    assert serving(x=x[:0])["log_prob"].shape == (0,)
    # Signatures do not check shapes against their TensorSpecs: the graph does, first.
    images = tf.zeros((2, 4, 4, 1), tf.uint8)
    for name, call, shown in [
            ("x", lambda: serving(x=x[0]), r"\[8 8 1\]"),
            ("x", lambda: serving(x=tf.ones((2, 8, 8, 3))), r"\[2 8 8 3\]"),
            ("x", lambda: loaded.signatures["encode"](x=tf.ones((2, 4, 4, 1))), r"\[2 4 4 1\]"),
            ("z", lambda: loaded.signatures["decode"](z=tf.ones((2, 8, 8))), r"\[2 8 8\]"),
            ("images", lambda: loaded.signatures["bits_per_dim"](
                images=images, seed=tf.constant([1, 2])), r"\[2 4 4 1\]")]:
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"{name} must have shape \(None, 8, 8, 1\).*got shape\] {shown}"):
            call()


@pytest.mark.parametrize("where", ["eager", "tf.function"])
def test_an_int_seed_means_that_int_and_zero_in_every_seeded_method(where, image_model):
    """Keras' convention: ``seed=s`` is the stateless seed ``[s, 0]``, not a traceback from
    inside a random op (``model.sample(64, seed=1)`` used to fail with "Shape must be rank 1")."""
    images = tf.cast(_batch(image_model, 3), tf.uint8)
    dequantizer = tfnvp.VariationalDequantizer(images.shape[-1], num_couplings=1,
                                               hidden_channels=4, context_channels=2)
    methods = {
        "sample": lambda seed: image_model.sample(2, seed=seed),
        "bits_per_dim": lambda seed: image_model.bits_per_dim(images, seed=seed),
        "dequantize": lambda seed: image_model.dequantize(images, seed=seed)[0],
        "tfnvp.dequantize": lambda seed: tfnvp.dequantize(images, seed=seed),
        "VariationalDequantizer.dequantize": lambda seed: dequantizer.dequantize(
            images, seed=seed)[0],
    }
    for name, method in methods.items():
        run = method if where == "eager" else (lambda m: lambda seed: tf.function(m)(seed))(method)
        seven, pair = run(7).numpy(), run([7, 0]).numpy()
        np.testing.assert_array_equal(seven, pair, err_msg=name)
        np.testing.assert_array_equal(run(np.int64(7)).numpy(), pair, err_msg=name)
        assert not np.array_equal(seven, run([7, 1]).numpy()), name


@pytest.mark.parametrize("seed, error, words", [
    ([1, 2, 3], ValueError, "shape [3]"),
    ([[1, 2]], ValueError, "shape [1, 2]"),
    ([1.0, 2.0], TypeError, "dtype float32"),
    (True, TypeError, "got True"),
    ("abc", TypeError, "dtype string"),
])
def test_bad_seeds_are_rejected_naming_the_problem(seed, error, words, image_model):
    images = tf.cast(_batch(image_model, 2), tf.uint8)
    for call in (lambda: image_model.sample(2, seed=seed),
                 lambda: image_model.bits_per_dim(images, seed=seed),
                 lambda: image_model.dequantize(images, seed=seed),
                 lambda: tfnvp.dequantize(images, seed=seed),
                 lambda: tfnvp.DenseRealNVP(dim=4, hidden_dim=8, depth=1,
                                            num_couplings=2).sample(2, seed=seed)):
        with pytest.raises(error, match="seed") as raised:
            call()
        assert words in str(raised.value)


@pytest.mark.parametrize("options", [dict(recompute_gradients=True),
                                     dict(dequantization="variational", num_classes=3)],
                         ids=["recompute_gradients", "variational_conditional"])
def test_empty_batches_in_evaluation_mode(options):
    """Empty batches give empty results (oneDNN's kernels, TensorFlow's default on AVX-512
    CPUs, reject them: the conditioners pad them), also with whole-conditioner recompute
    and through a variational dequantizer's networks; non-empty results are unchanged."""
    model = tfnvp.RealNVP(IMAGE, num_scales=2, num_res_blocks=1, hidden_channels=4,
                          dequantizer_channels=4, **options)
    labels = {"labels": tf.constant([0, 2], tf.int32)} if "num_classes" in options else {}
    empty = {key: value[:0] for key, value in labels.items()}
    x = _batch(model, 2)
    images = tf.cast(x, tf.uint8)
    assert model.log_prob(x[:0], **empty).shape == (0,)
    assert model.bits_per_dim(images[:0], seed=[1, 2], **empty).shape == (0,)
    assert model.encode(x[:0], **empty).shape == (0,) + IMAGE
    assert model.sample(0, seed=[1, 2], **empty).shape == (0,) + IMAGE
    both = model.bits_per_dim(images, seed=[1, 2], **labels).numpy()
    one = model.bits_per_dim(images[:1], seed=[1, 2],
                             **{key: value[:1] for key, value in labels.items()}).numpy()
    assert np.all(np.isfinite(both)) and one.shape == (1,)
