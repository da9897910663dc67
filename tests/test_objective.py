"""``FlowModel.objective``: the one composition of the objective, and the model's own checks
of what a traced function's inputs leave unknown (issue 28, item 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import tensorflow as tf

import tfnvp
from bijector_checks import perturb_weights


def _model(**kwargs) -> tfnvp.RealNVP:
    model = tfnvp.RealNVP((4, 4, 2), num_scales=2, num_res_blocks=1, hidden_channels=4,
                          dtype="float64", **kwargs)
    perturb_weights(model.conditioners + model.statistics
                    + ([model.prior] if model.num_classes else []), scale=0.2)
    return model


def _images(shape, seed=3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


@pytest.mark.parametrize("options", [{}, {"num_classes": 3}, {"dequantization": "variational"}],
                         ids=["uniform", "conditional", "variational"])
def test_objective_is_the_change_of_variables_and_the_dequantization_bound(options):
    model = _model(**options)
    if "dequantization" in options:
        perturb_weights([model.dequantizer], scale=0.2, seed=1)
    labels = {"labels": np.array([0, 2, 1])} if "num_classes" in options else {}
    images, seed = _images((3, 4, 4, 2)), (5, 7)
    objective = model.objective(images, seed=seed, **labels)
    assert isinstance(objective, tfnvp.Objective)
    x, log_q = model.dequantize(images, seed=seed, **labels)
    # Eq. (3): the prior of z = f(x) (p(z | y) given labels) plus the log-det of f at x.
    z = model.encode(x, **labels)
    prior = (model.prior.distribution(labels["labels"]) if labels
             else model.distribution.distribution)
    np.testing.assert_allclose(objective.log_prior, prior.log_prob(z), rtol=1e-10)
    np.testing.assert_allclose(objective.log_prob, model.log_prob(x, **labels), rtol=1e-12)
    np.testing.assert_array_equal(objective.log_prob, objective.log_prior + objective.log_det)
    np.testing.assert_allclose(objective.log_q, np.broadcast_to(log_q, [3]), rtol=1e-12)
    assert np.any(objective.log_q != 0) == ("dequantization" in options)
    # The dequantization bound, and bits/dim on the 8-bit scale: nll / (D ln 2).
    np.testing.assert_allclose(objective.nll, objective.log_q - objective.log_prob, rtol=1e-12)
    np.testing.assert_allclose(objective.bits_per_dim, objective.nll / (32 * math.log(2.0)),
                               rtol=1e-12)
    # nll, log_prob and bits_per_dim are its fields.
    np.testing.assert_array_equal(model.nll(images, seed=seed, **labels), objective.nll)
    np.testing.assert_array_equal(model.bits_per_dim(images, seed=seed, **labels),
                                  objective.bits_per_dim)
    continuous = model.objective(x, **labels)  # Float inputs: log q = 0.
    np.testing.assert_array_equal(continuous.log_q, np.zeros(3))
    np.testing.assert_array_equal(continuous.nll, -model.log_prob(x, **labels).numpy())


def test_a_traced_function_gets_one_label_per_input_and_sample():
    """The model's label check covers a batch size known only at run time (an export's, a
    user's tf.function): labels are never broadcast over a batch."""
    model = _model(num_classes=3)
    spec = tf.TensorSpec([None, 4, 4, 2], tf.float64)
    log_prob = tf.function(lambda x, y: model.log_prob(x, labels=y),
                           input_signature=[spec, tf.TensorSpec([None], tf.int32)])
    x = tf.fill([4, 4, 4, 2], tf.constant(100.5, tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"labels: expected shape \[4\] \(one label per input\), got shape "
                             r"\[1\]"):
        log_prob(x, tf.constant([1]))
    np.testing.assert_allclose(log_prob(x, tf.constant([0, 1, 2, 0])),
                               model.log_prob(x, labels=[0, 1, 2, 0]), rtol=1e-12)
    sample = tf.function(
        lambda n, t, y: model.sample(n, temperature=t, seed=[1, 2], labels=y),
        input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32),
                         tf.TensorSpec([None], tf.int32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"one label per sample"):
        sample(tf.constant(3), tf.constant(1.0), tf.constant([0, 1]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="temperature: expected a finite non-negative number, got -1"):
        sample(tf.constant(2), tf.constant(-1.0), tf.constant([0, 1]))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="num_samples: expected a non-negative count, got -1"):
        sample(tf.constant(-1), tf.constant(1.0), tf.constant([], tf.int32))
    np.testing.assert_allclose(
        sample(tf.constant(2), tf.constant(0.5), tf.constant([2, 0])),
        model.sample(2, temperature=tf.constant(0.5, tf.float32), seed=[1, 2], labels=[2, 0]),
        rtol=1e-12)


@pytest.mark.parametrize("options", [{}, {"dequantization": "variational"}],
                         ids=["uniform", "variational"])
def test_one_seed_per_image_gives_each_image_its_own_noise_in_any_batch(options):
    """The trainers' pipelines yield a seed per image ([batch, 2]): an image's objective is
    the same alone or in a batch, and the compiled method traces once for every size."""
    model = _model(**options)
    images = _images((5, 4, 4, 2))
    seeds = np.random.default_rng(4).integers(0, 2**31, (5, 2)).astype(np.int64)
    objective = model.objective(images, seed=seeds)
    for i in range(5):
        alone = model.objective(images[i:i + 1], seed=seeds[i:i + 1])
        for name in ("nll", "log_prob", "log_q"):
            np.testing.assert_allclose(getattr(alone, name), getattr(objective, name)[i:i + 1],
                                       rtol=1e-12, err_msg=name)
    x, _ = model.dequantize(images, seed=seeds)
    np.testing.assert_allclose(objective.log_prob, model.log_prob(x), rtol=1e-12)
    assert [f.experimental_get_tracing_count()
            for f in model.compiled_functions()["objective"]] == [1]
    # K importance samples: each image's seed is split as a [2] seed would be.
    k2 = model.bits_per_dim(images, seed=seeds, num_samples=2).numpy()
    for i in (0, 3):
        np.testing.assert_allclose(k2[i:i + 1], model.bits_per_dim(
            images[i:i + 1], seed=seeds[i], num_samples=2), rtol=1e-12)
    with pytest.raises(ValueError, match=r"one seed per example \(shape \[5, 2\]\), got "
                                         r"shape \[4, 2\]"):
        model.objective(images, seed=seeds[:4])
