"""Glow on the flow engine: exactness, gradients, checkpoints, API, layout, digits training."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_digits

import tfnvp
from tfnvp.nets.glow_net import MIN_LOG_SCALE, GlowAffineHead

from bijector_checks import assert_exact_bijector, perturb_weights

SHAPE = (8, 8, 1)
EVAL_SEED = tf.constant([3, 5], tf.int32)


def _model(image_shape=SHAPE, num_scales=2, steps_per_scale=2, dtype="float64",
           **kwargs) -> tfnvp.Glow:
    return tfnvp.Glow(image_shape, num_scales=num_scales, steps_per_scale=steps_per_scale,
                      hidden_channels=8, dtype=dtype, **kwargs)


def _pixels(n: int = 2, shape=SHAPE, seed: int = 0, dtype=tf.float64) -> tf.Tensor:
    return tf.constant(np.random.default_rng(seed).uniform(8.0, 248.0, (n, *shape)), dtype)


def _initialized_and_perturbed(**kwargs) -> tfnvp.Glow:
    """Actnorms initialized from data (a training-mode pass), then every weight perturbed:
    far from the identity flow a new Glow is (zero-initialized coupling outputs and priors)."""
    model = _model(**kwargs)
    model.log_prob(_pixels(8, model.image_shape, seed=9), training=True)
    _perturb(model)
    perturb_weights(model.priors, scale=0.1, seed=1)  # The learned priors (default on).
    return model


def _perturb(model: tfnvp.Glow, first_step: int = 0, seed: int = 0) -> None:
    """Perturbs the weights of steps ``first_step`` on (the coupling networks less:
    their output scale is ``exp(3 * logs)``)."""
    perturb_weights(model.actnorms[first_step:] + model.convolutions[first_step:], scale=0.2,
                    seed=seed)
    perturb_weights(model.conditioners[first_step:], scale=0.05, seed=seed)


@pytest.mark.parametrize("image_shape,num_scales,graph_mode,options", [
    ((8, 8, 1), 2, True, {}),
    ((4, 4, 3), 1, False, {}),
    # Flow++'s conditioner options (tests/test_glow_flowpp.py); evaluation mode: no dropout.
    ((8, 8, 1), 2, False, dict(steps_per_scale=1, attention=True, attention_heads=2,
                               gated_convolutions=True, dropout=0.3)),
    # The additive coupling (the release's flow_coupling=0).
    ((8, 8, 1), 2, False, dict(coupling="additive")),
    # Without the release's learned priors (the models from before them).
    ((8, 8, 1), 2, False, dict(split_prior=False, learn_top=False)),
])
def test_whole_flow_exact_against_numerical_jacobian(image_shape, num_scales, graph_mode,
                                                     options):
    model = _initialized_and_perturbed(image_shape=image_shape, num_scales=num_scales, **options)
    x = _pixels(2, image_shape)
    z = model.bijector.inverse(x)
    logit_only = tfnvp.bijectors.LogitPreprocess().inverse(tf.identity(x))
    assert np.abs(z.numpy() - logit_only.numpy()).max() > 0.1
    errors = assert_exact_bijector(model.bijector, tf.identity(z), event_ndims=3,
                                   graph_mode=graph_mode)
    print(f"Glow {image_shape} x {num_scales} levels {options}: worst errors {errors}")
    # The model's own methods: encode/decode round trip from fresh tensors.
    np.testing.assert_allclose(model.decode(model.encode(x)).numpy(), x.numpy(), atol=1e-9)


def test_every_weight_gets_a_gradient():
    model = _model(dtype="float32")
    x = _pixels(8, dtype=tf.float32)
    keras_trainable = [w for layers in model._untracked.step_layers for layer in layers.values()
                       for w in layer.trainable_weights]
    assert len(model.trainable_variables) == len(keras_trainable) > 0
    optimizer = keras.optimizers.Adam(1e-2)

    def gradients():
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.nll(x, training=True))
        return tape.gradient(loss, model.trainable_variables)

    # The coupling networks' last layers start at zero, which blocks the gradient of
    # the layers before them; after one update every weight has one.
    optimizer.apply_gradients(zip(gradients(), model.trainable_variables))
    missing = [v.path for v, g in zip(model.trainable_variables, gradients())
               if g is None or not np.any(g.numpy())]
    assert not missing, f"weights without gradient: {missing}"


def test_checkpoint_round_trip_keeps_the_actnorm_initialization(tmp_path):
    model = _model(dtype="float32")
    x = _pixels(8, dtype=tf.float32)
    optimizer = keras.optimizers.Adam(1e-2)
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.nll(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
    path = tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt"))
    expected = model.log_prob(x).numpy()

    restored = _model(dtype="float32")
    assert all(float(a.initialized.numpy()) == 0.0 for a in restored.actnorms)
    tf.train.Checkpoint(model=restored).read(path).assert_existing_objects_matched()
    assert len(restored.weights) == len(model.weights)
    for saved, loaded in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy(), err_msg=saved.path)
    # Initialized flags restored: a training-mode pass on other data changes nothing.
    restored.log_prob(_pixels(8, seed=5, dtype=tf.float32), training=True)
    for saved, loaded in zip(model.weights, restored.weights):
        np.testing.assert_array_equal(loaded.numpy(), saved.numpy(), err_msg=saved.path)
    np.testing.assert_allclose(restored.log_prob(x).numpy(), expected, rtol=1e-6)


def test_sample_log_prob_and_modes():
    model = _initialized_and_perturbed()
    samples = model.sample(6, seed=[1, 2])
    assert samples.shape == (6, *SHAPE)
    assert np.all(np.isfinite(model.log_prob(samples).numpy()))
    np.testing.assert_array_equal(model.sample(6, seed=[1, 2]).numpy(), samples.numpy())
    # No batch norm: once the actnorms are initialized, training mode is evaluation mode.
    assert model.batch_norm_layers() == []
    x = _pixels(4, seed=3)
    np.testing.assert_array_equal(model.log_prob(x, training=True).numpy(),
                                  model.log_prob(x).numpy())
    images = tf.cast(x, tf.uint8)
    bits = model.bits_per_dim(images, seed=EVAL_SEED).numpy()
    assert bits.shape == (4,) and np.all(np.isfinite(bits))


class _FixedOutput(keras.layers.Layer):
    """A coupling body that outputs ``[t, h]`` interleaved (Glow's channel order) whatever
    it is given: the head's arithmetic on chosen pre-scales."""

    def __init__(self, t: np.ndarray, h: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self.raw = np.stack([t, h], axis=-1).reshape(*t.shape[:-1], -1)

    def call(self, kept, training=False, context=None):
        return tf.constant(self.raw, kept.dtype)


def test_coupling_scale_floor_keeps_sampling_finite():
    # h + 2 from -300 (Glow's sigmoid would be 1e-131, sampling's 1/s overflows) to 5.
    h = np.linspace(-302.0, 3.0, 2 * 3 * 4).reshape(1, 2, 3, 4)
    t = np.random.default_rng(0).normal(size=h.shape)
    head = GlowAffineHead(_FixedOutput(t, h, dtype="float64"), channels=8, parity=0,
                          dtype="float64")
    shift, log_scale = head(tf.zeros((1, 2, 3, 8), tf.float64))
    floor = MIN_LOG_SCALE
    s = np.maximum(1.0 / (1.0 + np.exp(-(h + 2.0))), np.exp(floor))
    np.testing.assert_allclose(log_scale.numpy()[..., 4:], np.log(s), rtol=1e-12)
    np.testing.assert_allclose(shift.numpy()[..., 4:], t * s, rtol=1e-12)
    np.testing.assert_array_equal(log_scale.numpy()[..., :4], 0.0)  # The kept half.
    assert log_scale.numpy().min() == floor
    # Latent -> data divides by s: finite (at most e^7 times larger) and exactly invertible.
    coupling = tfnvp.bijectors.glow_coupling(head)
    y = tf.constant(np.random.default_rng(1).normal(size=(1, 2, 3, 8)) * 5.0)
    x = coupling.forward(y).numpy()
    assert np.all(np.isfinite(x)) and np.abs(x).max() < 5.0 * 10 * np.exp(-floor)
    np.testing.assert_allclose(coupling.inverse(tf.constant(x)).numpy(), y.numpy(), rtol=1e-12)
    np.testing.assert_allclose(
        coupling.forward_log_det_jacobian(tf.identity(y), event_ndims=3).numpy(),
        -log_scale.numpy().sum(), rtol=1e-12)


def test_new_model_log_det_known_answer():
    """A new Glow: actnorms uninitialized (the identity), 1x1 convolutions rotations
    (log|det| 0), coupling networks outputting zero, so every coupling multiplies the
    transformed half by sigmoid(2).  log p(x) - log N(z) is the logit preprocessing's
    log-det plus (entries transformed) * log sigmoid(2): level 0 acts on 4x4x4 (32
    entries per step), level 1 on 2x2x8 (16), two steps each."""
    model = _model()
    x = _pixels(3)
    assert max(abs(float(c.log_abs_det(tf.float64))) for c in model.convolutions) < 1e-12
    z = model.encode(x)
    log_normal = tf.reduce_sum(-0.5 * tf.square(z) - 0.5 * np.log(2 * np.pi), axis=[1, 2, 3])
    logit_log_det = tfnvp.bijectors.LogitPreprocess().inverse_log_det_jacobian(
        tf.identity(x), event_ndims=3)
    expected = log_normal + logit_log_det + 2 * (32 + 16) * np.log(1 / (1 + np.exp(-2.0)))
    np.testing.assert_allclose(model.log_prob(x).numpy(), expected.numpy(), rtol=1e-12)


@pytest.mark.parametrize("num_scales,fractions", [(2, [0.5, 0.5]), (3, [0.5, 0.25, 0.25])])
def test_latent_scale_index_is_the_flow_layout(num_scales, fractions):
    """Changing the weights of levels >= k changes exactly the latents with index >= k."""
    steps = 1
    model = _initialized_and_perturbed(num_scales=num_scales, steps_per_scale=steps)
    index = model.latent_scale_index()
    np.testing.assert_array_equal(index, tfnvp.glow_latent_scale_index(SHAPE, num_scales))
    assert index.shape == SHAPE
    np.testing.assert_allclose(np.bincount(index.ravel()) / index.size, fractions)
    # The split takes the first half of the space_to_depth channels: the top row of
    # every 2x2 block of the level's input leaves.
    rows = np.indices(SHAPE[:2])[0]
    np.testing.assert_array_equal(index[..., 0] == 0, rows % 2 == 0)
    x = _pixels(2)
    z = model.encode(x).numpy()
    for level in range(1, num_scales):
        _perturb(model, first_step=level * steps, seed=level)
        z_new = model.encode(tf.identity(x)).numpy()
        changed = np.abs(z_new - z) > 1e-9
        np.testing.assert_array_equal(changed.any(axis=0), index >= level)
        z = z_new


def test_paper_configuration_and_bad_input():
    assert tfnvp.GLOW_PAPER_CONFIGS["cifar10"] == dict(
        image_shape=(32, 32, 3), num_scales=3, steps_per_scale=32, hidden_channels=512)
    # The paper's layout at a tiny width and depth (the full model has ~44M weights).
    small = tfnvp.Glow.from_paper("cifar10", steps_per_scale=1, hidden_channels=2)
    assert small.get_config()["num_scales"] == 3 and len(small.conditioners) == 3
    assert [c.channels for c in small.convolutions] == [12, 24, 48]
    with pytest.raises(ValueError, match="Unknown paper configuration 'mnist'"):
        tfnvp.Glow.from_paper("mnist")
    with pytest.raises(ValueError, match="divisible by 4"):
        tfnvp.Glow((6, 6, 1), num_scales=2, steps_per_scale=1, hidden_channels=2)
    with pytest.raises(ValueError, match="steps_per_scale"):
        tfnvp.Glow(SHAPE, num_scales=2, steps_per_scale=0, hidden_channels=2)
    model = _model(dtype="float32", num_classes=3)
    with pytest.raises(ValueError, match="pass labels"):
        model.log_prob(_pixels(2, dtype=tf.float32))
    labels = np.array([0, 2])
    samples = model.sample(2, labels=labels)
    assert np.all(np.isfinite(model.log_prob(samples, labels=labels).numpy()))


def test_digits_training_improves_held_out_bits_per_dim():
    """A short run on 8x8 digits lowers held-out bits/dim, measured in evaluation mode
    (which for Glow, without batch norm, is the training mode: asserted)."""
    keras.utils.set_random_seed(0)
    data = load_digits()
    images = np.round(data.images * 255 / 16).astype(np.uint8)[..., None]
    order = np.random.default_rng(0).permutation(len(images))
    train, test = images[order[:1500]], images[order[1500:]]
    model = tfnvp.Glow(SHAPE, num_scales=2, steps_per_scale=2, hidden_channels=16,
                       validate_args=False)
    optimizer = keras.optimizers.Adam(3e-3)

    @tf.function(input_signature=[tf.TensorSpec([64, *SHAPE], tf.uint8)])
    def step(batch):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(model.nll(batch, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))

    def held_out(training: bool) -> float:
        return float(tf.reduce_mean(model.bits_per_dim(test, seed=EVAL_SEED, training=training)))

    rng = np.random.default_rng(0)
    step(train[rng.integers(0, len(train), 64)])  # Initializes the actnorms from data.
    initial = held_out(False)
    for _ in range(60):
        step(train[rng.integers(0, len(train), 64)])
    final = held_out(False)
    print(f"Glow digits held-out bits/dim: after 1 step {initial:.4f}, after 61 steps {final:.4f}")
    assert np.isfinite(final) and final < initial - 0.1
    assert model.batch_norm_layers() == []
    np.testing.assert_allclose(held_out(True), final, rtol=1e-6)


def test_additive_coupling_is_volume_preserving_with_half_the_network_outputs():
    """coupling="additive": each coupling's log-det is exactly 0, y_b - x_b is the network's
    output t (no scale), and the networks give half the affine ones' features."""
    additive = _initialized_and_perturbed(steps_per_scale=1, coupling="additive")
    affine = _model(steps_per_scale=1)
    assert additive.get_config()["coupling"] == "additive" and "coupling" not in affine.get_config()
    for head, affine_head in zip(additive.conditioners, affine.conditioners):
        assert type(head).__name__ == "GlowAdditiveHead"
        assert 2 * head.body.out_channels == affine_head.body.out_channels == head.channels
    # The model's couplings (GlowStep: glow_coupling of each head).
    couplings = [tfnvp.bijectors.glow_coupling(head, additive=True)
                 for head in additive.conditioners]
    for coupling in couplings:
        channels = coupling.conditioner.channels  # 4, then 8 (level 2)
        x = tf.constant(np.random.default_rng(4).standard_normal((3, 4, 4, channels)),
                        tf.float64)
        y = coupling.inverse(tf.identity(x))
        np.testing.assert_array_equal(
            coupling.inverse_log_det_jacobian(tf.identity(x), event_ndims=3).numpy(), 0.0)
        np.testing.assert_array_equal(
            coupling.forward_log_det_jacobian(tf.identity(y), event_ndims=3).numpy(), 0.0)
        (t,) = coupling.conditioner(x * coupling.mask(x))
        half = channels // 2
        kept = slice(0, half) if coupling.parity == 0 else slice(half, channels)
        np.testing.assert_array_equal(y.numpy()[..., kept], x.numpy()[..., kept])
        np.testing.assert_allclose(y.numpy() - x.numpy(), t.numpy(), atol=1e-12)
        assert np.abs(t.numpy()).max() > 1e-3  # Perturbed: not the identity.
