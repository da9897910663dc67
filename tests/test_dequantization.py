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
