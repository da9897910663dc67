"""Squeeze: exact permutation, the channel order of Figure 3, shapes and errors."""

import numpy as np
import pytest
import tensorflow as tf

from tfnvp.bijectors import Squeeze

from bijector_checks import assert_exact_bijector


@pytest.mark.parametrize("order", ["space_to_depth", "checkerboard"])
def test_exact_against_numerical_jacobian(order):
    z = tf.random.normal((2, 2, 2, 8), dtype=tf.float64)  # forward un-squeezes to 4x4x2
    errors = assert_exact_bijector(Squeeze(order=order), z, event_ndims=3)
    assert errors["log_det_vs_numerical"] < 1e-9


def test_inverse_is_space_to_depth_with_documented_order():
    h, w, c = 4, 6, 3
    x = np.arange(h * w * c, dtype=np.float64).reshape(1, h, w, c)
    y = Squeeze().inverse(x).numpy()
    assert y.shape == (1, h // 2, w // 2, 4 * c)
    for i in range(h // 2):
        for j in range(w // 2):
            for dy in range(2):
                for dx in range(2):
                    for k in range(c):
                        assert y[0, i, j, (2 * dy + dx) * c + k] == x[0, 2 * i + dy, 2 * j + dx, k]


def test_channel_mask_after_squeeze_differs_from_checkerboard():
    """Figure 3: the first half of the squeezed channels must not be one checkerboard colour."""
    h = w = 4
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    colour = ((rows + cols) % 2).astype(np.float64)[None, :, :, None]
    squeezed = Squeeze().inverse(colour).numpy()[0]
    first_half = squeezed[..., :2]
    # Each kept half holds both colours, so the partition is a new one.
    assert set(np.unique(first_half)) == {0.0, 1.0}
    assert first_half.mean() == 0.5


def test_checkerboard_order_splits_by_colour():
    """Groups (0,1), (1,0), (0,0), (1,1): first half one colour, second half the other."""
    h, w, c = 4, 6, 2
    x = np.arange(h * w * c, dtype=np.float64).reshape(1, h, w, c)
    y = Squeeze(order="checkerboard").inverse(x).numpy()
    assert y.shape == (1, h // 2, w // 2, 4 * c)
    for i in range(h // 2):
        for j in range(w // 2):
            for g, (dy, dx) in enumerate([(0, 1), (1, 0), (0, 0), (1, 1)]):
                np.testing.assert_array_equal(y[0, i, j, g * c:(g + 1) * c],
                                              x[0, 2 * i + dy, 2 * j + dx])
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    colour = ((rows + cols) % 2).astype(np.float64)[None, :, :, None]
    squeezed = Squeeze(order="checkerboard").inverse(colour).numpy()
    assert np.all(squeezed[..., :2] == 1.0) and np.all(squeezed[..., 2:] == 0.0)
    # Un-squeezing in one order and squeezing in the other is a channel permutation.
    back = Squeeze().inverse(Squeeze(order="checkerboard").forward(tf.constant(y))).numpy()
    np.testing.assert_array_equal(np.sort(back, axis=-1), np.sort(y, axis=-1))


def test_unknown_order():
    with pytest.raises(ValueError, match="Unknown squeeze order 'diagonal'"):
        Squeeze(order="diagonal")


def test_any_batch_rank_and_event_shapes():
    bij = Squeeze()
    x = tf.zeros((2, 3, 4, 6, 5))
    assert bij.inverse(x).shape == (2, 3, 2, 3, 20)
    assert bij.inverse_event_shape([4, 6, 5]) == [2, 3, 20]
    assert bij.forward_event_shape([2, 3, 20]) == [4, 6, 5]
    np.testing.assert_array_equal(bij.forward_event_shape_tensor([2, 3, 20]).numpy(), [4, 6, 5])


def test_odd_sizes_raise():
    with pytest.raises(ValueError, match="height divisible by 2"):
        Squeeze().inverse(tf.zeros((1, 3, 4, 1)))
    with pytest.raises(ValueError, match="channels divisible by 4"):
        Squeeze().forward(tf.zeros((1, 2, 2, 6)))
