"""Keras conventions of tfnvp's models and layers: serialization, built at construction,
``compile``/``fit``/``evaluate`` by maximum likelihood, standard callbacks.

Tiny models on 8x8 images, a few steps each.
"""

import contextlib
import warnings
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfnvp
from tfnvp.bijectors.actnorm import ActNormParameters
from tfnvp.bijectors.batch_norm import BatchNormStatistics
from tfnvp.bijectors.invertible_conv import InvertibleConv1x1Weights
from tfnvp.bijectors.piecewise_linear import PiecewiseLinearParams
from tfnvp.models.conditional import ClassConditionalPrior
from tfnvp.nets.glow_net import GlowAffineHead, GlowNet
from tfnvp.nets.mlp import MLP
from tfnvp.nets.batch_norm import BatchNormalization
from tfnvp.nets.resnet import ResNet
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale
from tfnvp.nets.weight_norm import WeightNormConv2D

SHAPE = (8, 8, 1)
MODELS = {
    "realnvp": lambda **kw: tfnvp.RealNVP(SHAPE, num_scales=1, num_res_blocks=1,
                                          hidden_channels=4, **kw),
    "glow": lambda **kw: tfnvp.Glow(SHAPE, num_scales=1, steps_per_scale=2, hidden_channels=4,
                                    **kw),
}


def _images(n=32, seed=0):
    """Digit-like 8x8 uint8 images: a bright random blob on a dark background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:8, :8]
    centres = rng.uniform(2, 6, (n, 2))
    blob = np.exp(-((yy - centres[:, :1, None]) ** 2 + (xx - centres[:, 1:, None]) ** 2) / 4)
    return np.clip(blob * 255 + rng.normal(0, 8, blob.shape), 0, 255).astype(np.uint8)[..., None]


def _fresh(x):
    return tf.identity(tf.constant(x))


@pytest.mark.parametrize("layer", [
    lambda: GlowNet(4, hidden_channels=3, context_channels=2),
    lambda: GlowAffineHead(GlowNet(4, hidden_channels=3), channels=4, parity=1),
    lambda: MLP(5, 2, 3, activation="relu"),
    lambda: ResNet(4, 1, 6, skip_connections=False),
    lambda: BatchNormalization(momentum=0.9),
    lambda: WeightNormConv2D(3, kernel_size=1),
    lambda: ShiftAndLogScale(MLP(5, 1, 6), channels=3, recompute_gradients=True),
    lambda: ActNormParameters(3),
    lambda: BatchNormStatistics(3),
    lambda: InvertibleConv1x1Weights(3, seed=4),
    lambda: PiecewiseLinearParams(5),
    lambda: ClassConditionalPrior(3, (2, 2, 1)),
    lambda: tfnvp.UniformDequantizer(dtype="float64"),
    lambda: tfnvp.PiecewiseLinearFlow(6, x_min=-2.0, x_max=3.0),
])
def test_layers_are_registered_and_round_trip_their_config(layer):
    layer = layer()
    assert keras.saving.get_registered_name(type(layer)) == f"tfnvp>{type(layer).__name__}"
    serialized = keras.saving.serialize_keras_object(layer)
    copy = keras.saving.deserialize_keras_object(serialized)  # No custom_objects.
    assert type(copy) is type(layer)
    assert keras.saving.serialize_keras_object(copy) == serialized


def test_fresh_models_are_built():
    models = [MODELS["realnvp"](), MODELS["glow"](), tfnvp.DenseRealNVP(3, hidden_dim=4),
              MODELS["realnvp"](num_classes=3, dequantization="variational"),
              MODELS["glow"](num_classes=3)]
    for model in models:
        assert model.built
        # Every layer: Keras' fit traces the whole model symbolically (time and memory)
        # if any is not.
        unbuilt = [layer.path for layer in model._flatten_layers() if not layer.built]
        assert not unbuilt, unbuilt
        count = model.count_params()
        assert count == sum(int(np.prod(w.shape)) for w in model.weights) > 0


@pytest.mark.parametrize("strategy", [None, "one_device"])
@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_fit_traces_its_step_once(name, strategy, monkeypatch):
    """``compile`` builds the optimizer: a first step that created its variables would be
    traced twice (and hold both graphs)."""
    scope = (tf.distribute.OneDeviceStrategy("/cpu:0").scope() if strategy
             else contextlib.nullcontext())
    with scope:
        model = MODELS[name]()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert model.optimizer.built
    traces = []
    step = model.train_step
    monkeypatch.setattr(model, "train_step", lambda data: traces.append(1) or step(data))
    for _ in range(2):
        logs = model.train_on_batch(_images(8), return_dict=True)
        assert np.isfinite(logs["loss"])
    assert len(traces) == 1


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_fit_does_not_trace_the_model_to_build_it(name, monkeypatch):
    """Under a distribution strategy Keras builds unbuilt models by tracing ``call``."""
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        model = MODELS[name]()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
    calls = []
    monkeypatch.setattr(model, "call", lambda *args, **kwargs: calls.append(args))
    logs = model.train_on_batch(_images(8), return_dict=True)
    assert np.isfinite(logs["loss"]) and calls == []


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_fit_callbacks_save_and_load(name, tmp_path):
    images = _images(32)
    x = (images.astype(np.float32) + np.random.default_rng(2).uniform(0, 1, images.shape)
         ).astype(np.float32)
    train = tf.data.Dataset.from_tensor_slices(x).batch(32)  # One batch per epoch.
    valid = tf.data.Dataset.from_tensor_slices(_images(16, seed=1)).batch(16)  # uint8.
    model, twin = MODELS[name](), MODELS[name]()
    twin.set_weights(model.get_weights())
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    tensorboard = tmp_path / "tensorboard"
    callbacks = [
        keras.callbacks.TensorBoard(str(tensorboard)),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="val_bits_per_dim",
                                        mode="min", save_best_only=True),
        keras.callbacks.ModelCheckpoint(str(tmp_path / "epoch{epoch}.weights.h5"),
                                        save_weights_only=True),
        keras.callbacks.EarlyStopping(monitor="val_bits_per_dim", mode="min", patience=0),
    ]
    history = model.fit(train, validation_data=valid, epochs=2, callbacks=callbacks, verbose=0)
    for key in ("loss", "bits_per_dim", "val_loss", "val_bits_per_dim"):
        assert len(history.history[key]) >= 1 and all(np.isfinite(history.history[key]))
    # The first epoch's loss is the model's objective on its one batch before the update:
    # mean(nll(x, training=True)) + regularization_loss(); bits/dim leaves out the L2 term.
    nll = twin.nll(_fresh(x), training=True).numpy()
    regularization = twin.regularization_loss().numpy()
    np.testing.assert_allclose(history.history["loss"][0], nll.mean() + regularization,
                               rtol=1e-5)
    np.testing.assert_allclose(history.history["bits_per_dim"][0],
                               nll.mean() / (64 * math.log(2.0)), rtol=1e-5)
    # Training moved the batch-norm statistics / initialized the actnorms.
    if name == "realnvp":
        assert all(float(s.num_updates) > 0 for s in model.batch_norm_layers())
    else:
        assert all(float(a.initialized) == 1.0 for a in model.actnorms)
    assert any(p.name.startswith("events.out.tfevents") for p in tensorboard.rglob("*"))
    assert (tmp_path / "epoch1.weights.h5").exists() and (tmp_path / "best.keras").exists()

    # evaluate: evaluation-mode bits/dim (float inputs: already dequantized).
    expected = np.mean(-model.log_prob(_fresh(x)).numpy() / (64 * math.log(2.0)))
    result = model.evaluate(tf.data.Dataset.from_tensor_slices(x).batch(16), verbose=0,
                            return_dict=True)
    np.testing.assert_allclose(result["bits_per_dim"], expected, rtol=1e-5)

    log_prob = model.log_prob(_fresh(x)).numpy()
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")  # No custom_objects.
    assert type(loaded) is type(model)
    np.testing.assert_array_equal(loaded.log_prob(_fresh(x)).numpy(), log_prob)
    model.save_weights(tmp_path / "model.weights.h5")
    fresh = MODELS[name]()
    assert np.abs(fresh.log_prob(_fresh(x)).numpy() - log_prob).max() > 1e-3
    fresh.load_weights(tmp_path / "model.weights.h5")
    np.testing.assert_array_equal(fresh.log_prob(_fresh(x)).numpy(), log_prob)
    best = keras.models.load_model(tmp_path / "best.keras")
    assert np.all(np.isfinite(best.log_prob(_fresh(x)).numpy()))


def test_class_conditional_fit_takes_images_and_labels(tmp_path):
    images, labels = _images(16), np.arange(16) % 3
    model = MODELS["realnvp"](num_classes=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    data = tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)
    history = model.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["bits_per_dim"][0])
    assert np.isfinite(model.evaluate(data, verbose=0, return_dict=True)["bits_per_dim"])
    x = _fresh(images.astype(np.float32) + 0.5)
    model.save(tmp_path / "conditional.keras")
    loaded = keras.models.load_model(tmp_path / "conditional.keras")
    np.testing.assert_array_equal(loaded.log_prob(x, labels=labels).numpy(),
                                  model.log_prob(x, labels=labels).numpy())


def test_fit_evaluate_and_recalibrate_take_dict_batches_with_a_seed_per_image():
    """The trainers' batches ({"x": uint8 images, "seed": [B, 2], "labels"}): each image is
    dequantized from its own seed, as model.objective(**batch) does."""
    images, seeds = _images(16), np.arange(32, dtype=np.int64).reshape(16, 2)
    labels = np.arange(16, dtype=np.int32) % 3
    model = MODELS["realnvp"](num_classes=3)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    batches = tf.data.Dataset.from_tensor_slices(dict(x=images, seed=seeds, labels=labels))
    result = model.evaluate(batches.batch(16), verbose=0, return_dict=True)
    expected = model.objective(images, seed=seeds, labels=labels).bits_per_dim
    assert result["bits_per_dim"] == pytest.approx(float(np.mean(expected)), rel=1e-6)
    # Recalibrating on them is recalibrating on the images dequantized from their seeds.
    x, _ = model.dequantize(images, seed=seeds, labels=labels)
    initial = [v.numpy() for v in model.non_trainable_variables]
    statistics = []
    for batch in (dict(x=images, seed=seeds, labels=labels), (x, labels)):
        for variable, value in zip(model.non_trainable_variables, initial):
            variable.assign(value)  # mu + (b - mu) / 1 rounds differently for another mu.
        model.recalibrate([batch], 1)
        statistics.append([v.numpy() for v in model.non_trainable_variables])
    for ours, expected in zip(*statistics):
        np.testing.assert_array_equal(ours, expected)
    history = model.fit(batches.batch(8), epochs=1, verbose=0)
    assert np.isfinite(history.history["bits_per_dim"][0])
    with pytest.raises(ValueError, match=r"holds 'x' and optionally 'labels' and 'seed'.*"
                                         r"\['images'\]"):
        model.evaluate(tf.data.Dataset.from_tensor_slices(dict(images=images)).batch(8),
                       verbose=0)


def test_dense_real_nvp_fits_vectors(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 3)).astype(np.float32) * [1.0, 2.0, 0.5]
    model = tfnvp.DenseRealNVP(3, hidden_dim=8, num_couplings=2, batch_norm=True)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(32), epochs=3, verbose=0)
    assert history.history["bits_per_dim"][-1] < history.history["bits_per_dim"][0]
    model.save(tmp_path / "dense.keras")
    loaded = keras.models.load_model(tmp_path / "dense.keras")
    np.testing.assert_array_equal(loaded.log_prob(_fresh(x)).numpy(),
                                  model.log_prob(_fresh(x)).numpy())


def test_fit_refuses_weights_and_a_column_of_labels():
    """Issue 30: ``fit(x, sample_weight=w)`` trained and ignored ``w`` silently (Keras drops
    the weights of inputs without targets); labels of shape [B, 1] get a message with the fix."""
    images = _images(8)
    model = MODELS["realnvp"]()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    before = [w.numpy() for w in model.trainable_variables]
    with pytest.raises(ValueError, match=r"fit\(sample_weight=...\).*maximum likelihood"):
        model.fit(images, sample_weight=np.ones(8), batch_size=4, verbose=0)
    with pytest.raises(ValueError, match=r"fit\(class_weight=...\)"):
        model.fit(images, class_weight={0: 1.0}, batch_size=4, verbose=0)
    with pytest.raises(ValueError, match=r"evaluate\(sample_weight=...\)"):
        model.evaluate(images, sample_weight=np.ones(8), batch_size=4, verbose=0)
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_variables))

    conditional = MODELS["realnvp"](num_classes=3)
    conditional.compile(optimizer=keras.optimizers.Adam(1e-3))
    column = (np.arange(8) % 3)[:, None]
    for fit in (lambda: conditional.fit(images, column, batch_size=4, verbose=0),
                lambda: conditional.fit(tf.data.Dataset.from_tensor_slices((images, column))
                                        .batch(4), verbose=0)):
        with pytest.raises(ValueError, match=r"batch shape \((4|None),\).*got shape "
                                             r"\((4|None), 1\).*pass labels\[\.\.\., 0\]"):
            fit()
    with pytest.raises(ValueError, match=r"pass labels\[\.\.\., 0\]"):
        conditional.log_prob(images.astype(np.float32), labels=column)
@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_loaded_keras_file_resumes_training_with_its_optimizer_state(name, tmp_path):
    """A saved, compiled model loads compiled (``compile_from_config``) with the optimizer's
    iteration count and moments, and ``fit`` continues exactly as the original does."""
    images = _images(32)
    x = (images + np.random.default_rng(3).uniform(0, 1, images.shape)).astype(np.float32)
    model = MODELS[name]()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")

    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    # Same order (Keras' automatic layer names differ between the two objects).
    pairs = list(zip(loaded.optimizer.variables, model.optimizer.variables, strict=True))
    slots = [(a, b) for a, b in pairs if b.path.endswith(("_momentum", "_velocity"))]
    assert len(slots) == 2 * len(model.trainable_variables)
    assert all(np.abs(b.numpy()).max() > 0 for _, b in slots[1::2])  # Velocities moved.
    for a, b in pairs:
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.path)

    for m in (model, loaded):
        m.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert int(loaded.optimizer.iterations) == 4
    for a, b in zip(loaded.weights, model.weights, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7, err_msg=b.path)


def test_the_adam_string_compiles_a_fused_adam_that_round_trips(tmp_path):
    """``compile(optimizer="adam")`` is Keras' Adam with its defaults as ``tfnvp.FusedAdam``
    (one kernel per weight), saved and loaded as such."""
    images = _images(32)
    x = (images + np.random.default_rng(3).uniform(0, 1, images.shape)).astype(np.float32)
    model = MODELS["realnvp"]()
    model.compile(optimizer="adam")
    assert type(model.optimizer) is tfnvp.FusedAdam

    def settings(optimizer):
        return {k: v for k, v in optimizer.get_config().items() if k != "name"}

    assert settings(model.optimizer) == settings(keras.optimizers.Adam())
    model.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(loaded.optimizer) is tfnvp.FusedAdam and int(loaded.optimizer.iterations) == 2


@pytest.fixture
def global_policy():
    """Sets Keras' global dtype policy for one test and restores it afterwards."""
    previous = keras.config.dtype_policy()
    yield keras.mixed_precision.set_global_policy
    keras.mixed_precision.set_global_policy(previous)


def _compute_dtypes(model) -> set[str]:
    return {layer.compute_dtype for layer in model._flatten_layers(include_self=False)}


@pytest.mark.parametrize("name", ["realnvp", "glow"])
def test_a_mixed_global_policy_applies_to_the_conditioners(name, global_policy):
    x = _fresh(_images(4).astype(np.float32) + 0.5)
    global_policy("mixed_bfloat16")
    model = MODELS[name]()
    assert model.get_config()["conditioner_dtype"] == "mixed_bfloat16"
    assert "bfloat16" in _compute_dtypes(model)
    assert model.log_prob(x).dtype == tf.float32  # The flow and its log-dets stay float32.
    global_policy("float32")
    twin = MODELS[name]()
    assert twin.get_config()["conditioner_dtype"] is None
    assert _compute_dtypes(twin) == {"float32"}
    rng = np.random.default_rng(4)  # Weights off their initialization (zero output layers).
    weights = [w * (1 + 0.1 * rng.normal(size=w.shape)) + 0.01 * rng.normal(size=w.shape)
               for w in model.get_weights()]
    model.set_weights(weights)
    twin.set_weights(weights)
    # Same weights, bfloat16 arithmetic in the conditioners: close, not equal.
    log_p, twin_log_p = model.log_prob(x).numpy(), twin.log_prob(x).numpy()
    assert not np.array_equal(log_p, twin_log_p)
    np.testing.assert_allclose(log_p, twin_log_p, rtol=0.02)
    # An explicit conditioner_dtype wins over the global policy.
    global_policy("mixed_bfloat16")
    assert MODELS[name](conditioner_dtype="float32").get_config()["conditioner_dtype"] == "float32"


def test_float16_conditioners_train_with_loss_scaling(global_policy):
    global_policy("mixed_float16")
    model = MODELS["realnvp"]()
    global_policy("float32")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert "float16" in _compute_dtypes(model)
    before = [w.numpy() for w in model.trainable_weights]
    # The dynamic loss scale starts at 2^15 and halves after each step whose scaled
    # gradients overflow float16 (that update is skipped); then updates are applied.
    for _ in range(20):
        logs = model.train_on_batch(_images(8), return_dict=True)
        assert np.isfinite(logs["loss"])
    assert float(model.optimizer.dynamic_scale) < 2.0 ** 15
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


def test_keras_call_and_predict_take_uint8_images_like_fit():
    model = MODELS["realnvp"]()
    images = _images(4)
    # 8-bit images: -nll, the dequantization bound's log p(x + u) - log q(u | x).
    log_p = model.predict(images, verbose=0)
    assert log_p.shape == (4,) and np.all(np.isfinite(log_p))
    bound = -model.nll(images, seed=[1, 2]).numpy()
    np.testing.assert_allclose(model(images).numpy(), bound, atol=5.0)  # Other noise.
    x = _fresh(images.astype(np.float32) + 0.5)
    np.testing.assert_array_equal(model(x).numpy(), model.log_prob(x).numpy())


def test_float_images_in_the_unit_interval_warn_once():
    model = MODELS["realnvp"]()
    unit = _images(4).astype(np.float32) / 255.0
    with pytest.warns(UserWarning, match=r"lies in \[0, 1\].*\[0, 256\)"):
        model.log_prob(unit)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.log_prob(unit)  # Once per model.
        MODELS["realnvp"]().log_prob(unit * 255.0)  # Pixel-scale images: no warning.
    # Keras' entry points, whose batches are symbolic, check in-memory arrays.
    with pytest.warns(UserWarning, match=r"lies in \[0, 1\]"):
        MODELS["glow"]().predict(unit, verbose=0)


def _summary(model, **kwargs) -> str:
    lines = []
    model.summary(print_fn=lambda line, line_break=None: lines.append(line), **kwargs)
    return "\n".join(lines)


SUMMARY_MODELS = {
    "realnvp": lambda: tfnvp.RealNVP(SHAPE, num_scales=2, num_res_blocks=1, hidden_channels=4),
    "glow": lambda: tfnvp.Glow(SHAPE, num_scales=2, steps_per_scale=1, hidden_channels=4),
    "realnvp_conditional_variational_mixture": lambda: tfnvp.RealNVP(
        SHAPE, num_scales=1, num_res_blocks=1, hidden_channels=4, num_classes=3,
        dequantization="variational", dequantizer_channels=4, coupling="logistic_mixture"),
    "glow_conditional": lambda: tfnvp.Glow(SHAPE, num_scales=1, steps_per_scale=2,
                                           hidden_channels=4, num_classes=3),
    "dense": lambda: tfnvp.DenseRealNVP(3, hidden_dim=4, num_couplings=2, batch_norm=True),
}


@pytest.mark.parametrize("name", SUMMARY_MODELS)
def test_summary_shows_the_output_shape_of_every_layer(name):
    """``summary()`` shows every layer's output shape, with ``None`` for the batch axis
    (not "?", not the batch of 1 the model is built with), and the shapes are those the
    layers produce; the model's own output shape is its batch axes."""
    model = SUMMARY_MODELS[name]()
    for nested in (False, True):
        text = _summary(model, expand_nested=nested)
        assert "?" not in text and "(1, " not in text, text
    batch = 3

    def concrete(shape):
        return tuple(batch if d is None else d for d in shape)

    labels = None if model.num_classes is None else tf.constant([0, 2, 1])
    context = None if labels is None else tf.one_hot(labels, model.num_classes)
    for layer in model.layers:
        shapes = layer._build_shapes_dict  # What summary() hands compute_output_shape.
        declared = layer.compute_output_shape(**shapes)
        declared = declared if isinstance(declared[0], tuple) else (declared,)
        assert all(shape[0] is None for shape in declared), (layer.name, declared)
        if isinstance(layer, (ActNormParameters, BatchNormStatistics, InvertibleConv1x1Weights)):
            # Parameters of a shape-preserving bijector: the tensor it transforms, the step's.
            step = layer.name.rsplit("_", 1)[1]
            assert declared == (model.get_layer(f"coupling_{step}")._build_shapes_dict["x_shape"],)
            continue
        if layer.name.startswith(("coupling_", "split_prior_", "top_prior_")):  # Conditioners.
            outputs = layer(tf.zeros(concrete(shapes["x_shape"]), model.flow_dtype), context=context)
        elif layer.name == "dequantizer":
            outputs = model.dequantize(np.zeros((batch,) + SHAPE, np.uint8), seed=[1, 2],
                                       labels=labels)
        else:
            assert layer.name == "prior", layer.name
            outputs = layer(labels)
        assert tuple(tuple(t.shape) for t in outputs) == tuple(map(concrete, declared)), layer.name
    event = (None,) + model.event_shape
    spec = model.compute_output_spec(keras.KerasTensor(event, dtype=model.compute_dtype))
    assert spec.shape == (None,)
    x = tf.fill(concrete(event), tf.constant(100.5, model.flow_dtype))
    log_p = model.log_prob(x, labels=labels) if labels is not None else model(x)
    assert tuple(log_p.shape) == model.compute_output_shape(concrete(event)) == (batch,)
