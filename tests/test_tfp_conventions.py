"""``model.distribution`` used the way TensorFlow Probability's documentation uses a
distribution (issue 30): extra batch dimensions, ``sample_shape`` tuples, unbatched
values, ``tfb.Invert``, composition with other bijectors and distributions
(``TransformedDistribution``, ``tfd.Mixture``), training through
``dist.trainable_variables``, ``tf.function`` across batch sizes, and saving a
``tf.Module`` that holds the model.

Tiny flows on 8x8x1 images (one scale, one residual block, 8 channels); the exact
checks are in float64 and compare with the model's own methods (``log_prob``,
``encode``), which the conformance tests check against numerical Jacobians.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfnvp

from bijector_checks import perturb_weights

tfb = tfp.bijectors
tfd = tfp.distributions

SHAPE = (8, 8, 1)
D = int(np.prod(SHAPE))


def _real_nvp(dtype="float64", seed=0, **kwargs) -> tfnvp.RealNVP:
    model = tfnvp.RealNVP(SHAPE, num_scales=1, num_res_blocks=1, hidden_channels=8,
                          dtype=dtype, **kwargs)
    perturb_weights(model.conditioners + model.statistics, scale=0.2, seed=seed)
    return model


@pytest.fixture(scope="module")
def model() -> tfnvp.RealNVP:
    return _real_nvp()


def _x(batch=(3,), seed=0, dtype=tf.float64) -> tf.Tensor:
    return tf.random.stateless_uniform(tuple(batch) + SHAPE, seed=[seed, 7], minval=0.0,
                                       maxval=256.0, dtype=dtype)


def _backing(variables) -> set[int]:
    """Ids of the tf.Variables behind Keras or TensorFlow variables."""
    return {id(getattr(v, "value", v)) if isinstance(v, keras.Variable) else id(v)
            for v in variables}


# ------------------------------------------------------------------ variables
@pytest.mark.parametrize("name", ["realnvp", "glow", "dense", "variational"])
def test_distribution_and_bijector_expose_every_weight_once(name):
    """``tf.Module.trainable_variables`` of the distribution, its bijector and of
    TFP objects holding them lists each of the flow's weights once (was: none)."""
    model = {
        "realnvp": lambda: _real_nvp("float32"),
        "glow": lambda: tfnvp.Glow(SHAPE, num_scales=1, steps_per_scale=1, hidden_channels=8),
        "dense": lambda: tfnvp.DenseRealNVP(3, hidden_dim=8, num_couplings=2, batch_norm=True),
        "variational": lambda: _real_nvp("float32", dequantization="variational"),
    }[name]()
    dist = model.distribution
    expected_trainable = list(model.trainable_variables)
    expected_all = list(model.variables)
    if name == "variational":  # The dequantizer is no part of the distribution of x.
        dequantizer = _backing(model.dequantizer.variables)
        expected_trainable = [v for v in expected_trainable if id(v.value) not in dequantizer]
        expected_all = [v for v in expected_all if id(v.value) not in dequantizer]
    for module in (dist, model.bijector, tfb.Invert(model.bijector),
                   tfd.Mixture(tfd.Categorical(logits=tf.zeros([2], model.flow_dtype)),
                               [dist, dist])):
        assert len(module.trainable_variables) == len(expected_trainable) > 0
        assert _backing(module.trainable_variables) == _backing(expected_trainable)
        assert len(module.variables) == len(expected_all)
        assert _backing(module.variables) == _backing(expected_all)
        assert all(isinstance(v, tf.Variable) for v in module.variables)


def test_gradients_through_the_distributions_variables_are_the_models(model):
    x = _x()
    with tf.GradientTape(persistent=True) as tape:
        loss = -tf.reduce_mean(model.distribution.log_prob(tf.identity(x)))
    by_distribution = tape.gradient(loss, model.distribution.trainable_variables)
    by_model = dict(zip([id(v.value) for v in model.trainable_variables],
                        tape.gradient(loss, model.trainable_variables)))
    assert all(g is not None for g in by_distribution)
    for variable, gradient in zip(model.distribution.trainable_variables, by_distribution):
        np.testing.assert_array_equal(gradient.numpy(), by_model[id(variable)].numpy())


def test_tfps_training_idiom_trains_every_weight():
    """TFP's loop -- a tape over ``dist.trainable_variables``, an optimizer applying the
    gradients, in a ``tf.function`` -- moves every trainable weight and lowers the NLL.
    (TFP's older examples call ``optimizer.minimize(loss, dist.trainable_variables)``:
    Keras 3 optimizers have no ``minimize``; ``tfp.math.minimize(loss_fn, num_steps,
    optimizer, trainable_variables=dist.trainable_variables)`` works too, but traces
    for ~15 s, so it is not repeated here.)"""
    model = _real_nvp("float32", seed=1)
    dist = model.distribution
    x = tf.constant(np.clip(np.random.default_rng(0).normal(128, 30, (16,) + SHAPE), 0, 255),
                    tf.float32)
    before = [v.numpy() for v in model.trainable_variables]
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(dist.trainable_variables)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(x))
        gradients = tape.gradient(loss, dist.trainable_variables)
        optimizer.apply_gradients(zip(gradients, dist.trainable_variables))
        return loss

    first = float(train_step())
    for _ in range(3):
        train_step()
    unmoved = [v.path for v, b in zip(model.trainable_variables, before)
               if np.array_equal(v.numpy(), b)]
    assert not unmoved
    assert float(-tf.reduce_mean(model.log_prob(x))) < first

    # The same loop run eagerly (a fresh tensor per step: TFP caches by input tensor).
    before = [v.numpy() for v in model.trainable_variables]
    for _ in range(2):
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(dist.log_prob(tf.identity(x)))
        gradients = tape.gradient(loss, dist.trainable_variables)
        optimizer.apply_gradients(zip(gradients, dist.trainable_variables))
    assert all(not np.array_equal(v.numpy(), b)
               for v, b in zip(model.trainable_variables, before))


# ------------------------------------------------------------------ shapes
def test_extra_batch_dimensions_and_unbatched_values(model):
    dist = model.distribution
    assert dist.event_shape == SHAPE and dist.batch_shape == []
    x = _x((2, 3))
    log_prob = dist.log_prob(x)
    assert log_prob.shape == (2, 3)
    np.testing.assert_allclose(log_prob.numpy().reshape(6),
                               model.log_prob(tf.reshape(x, (6,) + SHAPE)).numpy(), rtol=1e-12)
    single = dist.log_prob(tf.identity(x[1, 2]))
    assert single.shape == ()
    np.testing.assert_allclose(single.numpy(), log_prob[1, 2].numpy(), rtol=1e-12)
    np.testing.assert_allclose(dist.prob(tf.identity(x[0])).numpy(),
                               np.exp(log_prob[0].numpy()), rtol=1e-10)
    with pytest.raises(ValueError, match=r"Expected images of shape \[\.\.\., 8, 8, 1\]"):
        dist.log_prob(tf.zeros((2, 8, 8, 3), tf.float64))


def test_sample_shape_tuples(model):
    dist = model.distribution
    for sample_shape in ((), 4, (2, 3), [1, 2, 2]):
        x = dist.sample(sample_shape, seed=(1, 2))
        expected = tuple(np.atleast_1d(sample_shape)) if sample_shape != () else ()
        assert x.shape == expected + SHAPE
        assert np.isfinite(x.numpy()).all()
    # Stateless seeds repeat; sample_and_log_prob's densities are the model's.
    x = dist.sample((2, 3), seed=(5, 6))
    np.testing.assert_array_equal(x.numpy(), dist.sample((2, 3), seed=(5, 6)).numpy())
    # A nearly new flow samples inside [0, 256): dist.sample is not clipped, unlike
    # model.sample, and log_prob is undefined outside.
    near_identity = tfnvp.RealNVP(SHAPE, num_scales=1, num_res_blocks=1, hidden_channels=8,
                                  dtype="float64")
    perturb_weights(near_identity.conditioners, scale=0.02)
    x, log_prob = near_identity.distribution.experimental_sample_and_log_prob((2, 3), seed=(7, 8))
    inside = (x.numpy() >= 0) & (x.numpy() < 256)
    flat = inside.reshape(6, -1).all(axis=1)
    assert flat.sum() >= 3
    np.testing.assert_allclose(log_prob.numpy().reshape(6)[flat],
                               near_identity.log_prob(tf.reshape(x, (6,) + SHAPE)[flat]).numpy(),
                               rtol=1e-9)


def test_methods_without_a_closed_form_raise_not_implemented(model):
    """A flow has no closed-form mean, variance or entropy: TFP says so plainly."""
    for method in ("mean", "variance", "entropy"):
        with pytest.raises(NotImplementedError):
            getattr(model.distribution, method)()


# ------------------------------------------------------------------ composition
def test_invert_is_the_encoder(model):
    x = _x()
    encoder = tfb.Invert(model.bijector)
    np.testing.assert_allclose(encoder.forward(tf.identity(x)).numpy(),
                               model.encode(x).numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(
        encoder.forward_log_det_jacobian(tf.identity(x), event_ndims=3).numpy(),
        model.bijector.inverse_log_det_jacobian(tf.identity(x), event_ndims=3).numpy(),
        rtol=1e-12)
    z = model.encode(x)
    np.testing.assert_allclose(encoder.inverse(tf.identity(z)).numpy(), x.numpy(), atol=1e-8)
    # The latent distribution of the data, pushed through the encoder: N(0, I) densities.
    pushed = tfd.TransformedDistribution(model.distribution, encoder)
    base = tfd.Sample(tfd.Normal(tf.constant(0.0, tf.float64), 1.0), SHAPE)
    np.testing.assert_allclose(pushed.log_prob(tf.identity(z)).numpy(),
                               base.log_prob(z).numpy(), rtol=1e-9)


def test_chained_into_another_transformed_distribution(model):
    """``y = 2 x`` on top of the flow: ``log p(y) = log p_flow(y / 2) - D log 2``."""
    scaled = tfd.TransformedDistribution(model.distribution, tfb.Scale(tf.constant(2.0, tf.float64)))
    x = _x()
    np.testing.assert_allclose(scaled.log_prob(2.0 * x).numpy(),
                               model.log_prob(x).numpy() - D * np.log(2.0), rtol=1e-12)
    assert _backing(scaled.trainable_variables) == _backing(model.trainable_variables)
    # And a tfb.Chain around the flow's bijector over the flow's own base.
    chained = tfd.TransformedDistribution(model.distribution.distribution,
                                          tfb.Chain([tfb.Scale(tf.constant(2.0, tf.float64)),
                                                     model.bijector]))
    np.testing.assert_allclose(chained.log_prob(2.0 * x).numpy(),
                               scaled.log_prob(2.0 * x).numpy(), rtol=1e-12)
    assert chained.sample(2, seed=(1, 1)).shape == (2,) + SHAPE


def test_mixture_of_two_flows(model):
    other = _real_nvp(seed=3)
    weights = np.array([0.3, 0.7])
    mixture = tfd.Mixture(tfd.Categorical(probs=tf.constant(weights)),
                          [model.distribution, other.distribution])
    x = _x()
    expected = np.logaddexp(np.log(weights[0]) + model.log_prob(x).numpy(),
                            np.log(weights[1]) + other.log_prob(x).numpy())
    np.testing.assert_allclose(mixture.log_prob(tf.identity(x)).numpy(), expected, rtol=1e-12)
    assert mixture.sample(3, seed=(2, 2)).shape == (3,) + SHAPE
    assert _backing(mixture.trainable_variables) == (_backing(model.trainable_variables)
                                                     | _backing(other.trainable_variables))
    with tf.GradientTape() as tape:
        loss = -tf.reduce_mean(mixture.log_prob(tf.identity(x)))
    assert all(g is not None for g in tape.gradient(loss, mixture.trainable_variables))


# ------------------------------------------------------------------ compiled, saved
def test_tf_function_across_batch_sizes(model):
    dist = model.distribution
    log_prob = tf.function(dist.log_prob,
                           input_signature=[tf.TensorSpec((None,) + SHAPE, tf.float64)])
    for batch in (1, 4, 2):
        x = _x((batch,), seed=batch)
        np.testing.assert_allclose(log_prob(x).numpy(), model.log_prob(x).numpy(), rtol=1e-12)
    assert log_prob.experimental_get_tracing_count() == 1
    unsigned = tf.function(lambda x: dist.log_prob(x), reduce_retracing=True)
    for batch in (1, 4, 2, 3):
        x = _x((batch,), seed=batch)
        np.testing.assert_allclose(unsigned(x).numpy(), model.log_prob(x).numpy(), rtol=1e-12)
    assert unsigned.experimental_get_tracing_count() <= 2


class _Holder(tf.Module):
    """A user's module holding a model, exporting the distribution's log-density."""

    def __init__(self, model: tfnvp.RealNVP):
        super().__init__()
        self.model = model

    @tf.function(input_signature=[tf.TensorSpec((None,) + SHAPE, tf.float64)])
    def log_prob(self, x):
        return self.model.distribution.log_prob(x)


def test_saving_a_tf_module_that_holds_the_model(model, tmp_path):
    holder = _Holder(model)
    x = _x((4,))
    expected = model.log_prob(x).numpy()
    tf.saved_model.save(holder, str(tmp_path / "saved"))
    loaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_allclose(loaded.log_prob(x).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(loaded.log_prob(x[:1]).numpy(), expected[:1], rtol=1e-12)

    # A checkpoint of the module restores the weights into a fresh model.
    path = tf.train.Checkpoint(holder=holder).save(str(tmp_path / "ckpt" / "c"))
    fresh = _Holder(_real_nvp(seed=9))
    assert np.abs(fresh.log_prob(x).numpy() - expected).max() > 1e-3
    tf.train.Checkpoint(holder=fresh).restore(path).assert_existing_objects_matched()
    np.testing.assert_allclose(fresh.log_prob(x).numpy(), expected, rtol=1e-12)


def test_a_checkpoint_of_the_distribution_holds_the_weights(model, tmp_path):
    """The variables are tracked like a TFP distribution's: a checkpoint of
    ``model.distribution`` alone saves and restores the model's weights."""
    x = _x()
    path = tf.train.Checkpoint(distribution=model.distribution).save(str(tmp_path / "d"))
    fresh = _real_nvp(seed=5)
    assert np.abs(fresh.log_prob(x).numpy() - model.log_prob(x).numpy()).max() > 1e-3
    tf.train.Checkpoint(distribution=fresh.distribution).restore(path).assert_consumed()
    np.testing.assert_allclose(fresh.log_prob(x).numpy(), model.log_prob(x).numpy(), rtol=1e-12)
