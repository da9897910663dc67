"""Dequantization stays inside [0, 256) and matches its definition."""

import numpy as np
import tensorflow as tf

import tfnvp


def test_float32_top_value_stays_below_256():
    images = np.full((1024, 1024), 255, np.uint8)
    x = tfnvp.dequantize(images, seed=(3, 4)).numpy()
    assert x.dtype == np.float32 and x.max() < 256.0 and x.min() >= 255.0
    mixed = np.random.default_rng(0).integers(0, 256, size=(512, 512), dtype=np.uint8)
    y = tfnvp.dequantize(mixed, seed=(5, 6)).numpy()
    assert np.all((y >= mixed) & (y < mixed.astype(np.float32) + 1.0))
    # The clamp matters: for this seed the plain float32 sum reaches 256.0.
    noise = tf.random.stateless_uniform(images.shape, seed=(3, 4)).numpy()
    assert np.any(np.float32(255.0) + noise == np.float32(256.0))


def test_seeded_noise_is_stateless_uniform():
    images = np.random.default_rng(0).integers(0, 255, size=(4, 3, 3, 1), dtype=np.uint8)
    x = tfnvp.dequantize(images, seed=(1, 2), dtype=tf.float64).numpy()
    noise = tf.random.stateless_uniform(images.shape, seed=(1, 2), dtype=tf.float64).numpy()
    np.testing.assert_array_equal(x, images + noise)
    unseeded = tfnvp.dequantize(images).numpy()
    assert np.all((unseeded >= images) & (unseeded < images + 1.0))


def test_one_seed_per_image_draws_each_image_alone():
    """Seeds of shape [batch..., 2]: image i's noise is stateless_uniform(H, W, C; seed_i),
    whatever batch it comes in; one [2] seed is one draw for the whole batch."""
    images = np.random.default_rng(0).integers(0, 256, size=(2, 3, 4, 5, 2), dtype=np.uint8)
    seeds = np.random.default_rng(1).integers(0, 2**31, size=(2, 3, 2), dtype=np.int64)
    x = tfnvp.dequantize(images, seed=seeds, dtype=tf.float64).numpy()
    for i, j in np.ndindex(2, 3):
        noise = tf.random.stateless_uniform((4, 5, 2), seed=seeds[i, j], dtype=tf.float64)
        np.testing.assert_array_equal(x[i, j], images[i, j] + noise.numpy())
    np.testing.assert_array_equal(x[1, :2], tfnvp.dequantize(images[1, :2], seed=seeds[1, :2],
                                                             dtype=tf.float64))
    traced = tf.function(lambda s: tfnvp.dequantize(images, seed=s, dtype=tf.float64))
    np.testing.assert_array_equal(traced(tf.constant(seeds)), x)
    empty = tfnvp.dequantize(images[:0], seed=seeds[:0])
    assert empty.shape == (0, 3, 4, 5, 2)


def test_variational_dequantizer_takes_one_seed_per_image():
    images = np.random.default_rng(0).integers(0, 256, size=(3, 4, 4, 1), dtype=np.uint8)
    seeds = np.array([[1, 2], [3, 4], [5, 6]], np.int64)
    dequantizer = tfnvp.VariationalDequantizer(1, num_couplings=1, hidden_channels=4,
                                               context_channels=2, dtype="float64")
    x, log_q = dequantizer.dequantize(images, seed=seeds)
    for i in range(3):
        x_i, log_q_i = dequantizer.dequantize(images[i:i + 1], seed=seeds[i:i + 1])
        np.testing.assert_array_equal(x[i:i + 1], x_i)
        np.testing.assert_array_equal(log_q[i:i + 1], log_q_i)
    # A new dequantizer is uniform dequantization: the same noise as tfnvp.dequantize's.
    np.testing.assert_allclose(x, tfnvp.dequantize(images, seed=seeds, dtype=tf.float64),
                               atol=1e-12)
