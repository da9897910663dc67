"""AffineCoupling: exactness, masks, identity at initialization, mode/cache."""

import numpy as np
import pytest
import tensorflow as tf

from tfnvp.bijectors import AffineCoupling, channel_mask, checkerboard_mask
from tfnvp.nets import ResNet, ShiftAndLogScale

from bijector_checks import assert_exact_bijector, perturb_weights


def _conditioner(channels: int, hidden: int = 8, dtype: str = "float64") -> ShiftAndLogScale:
    body = ResNet(hidden, num_blocks=1, out_channels=2 * channels, dtype=dtype)
    return ShiftAndLogScale(body, channels, dtype=dtype)


def _built(coupling: AffineCoupling, shape) -> AffineCoupling:
    coupling.inverse(tf.zeros(shape, tf.float64))
    perturb_weights([coupling.conditioner], scale=0.3)
    return coupling


@pytest.mark.parametrize("mask,parity,channels", [
    ("checkerboard", 0, 1), ("checkerboard", 1, 2), ("channel", 0, 4), ("channel", 1, 4)])
def test_exact_against_numerical_jacobian(mask, parity, channels):
    coupling = _built(AffineCoupling(_conditioner(channels), mask=mask, parity=parity),
                      (2, 4, 4, channels))
    z = tf.random.normal((3, 4, 4, channels), dtype=tf.float64)
    # A non-trivial map: the log-det is far from 0.
    assert np.abs(coupling.forward_log_det_jacobian(z, event_ndims=3).numpy()).min() > 1e-2
    assert_exact_bijector(coupling, z, event_ndims=3)


def test_masked_part_unchanged_and_triangular():
    coupling = _built(AffineCoupling(_conditioner(2), mask="checkerboard", parity=0),
                      (1, 4, 4, 2))
    x = tf.random.normal((2, 4, 4, 2), dtype=tf.float64)
    y = coupling.inverse(x)
    b = coupling.mask(x).numpy()
    np.testing.assert_array_equal((y.numpy() * b), (x.numpy() * b))
    assert np.abs((y - x).numpy() * (1 - b)).max() > 1e-3


def test_masks():
    m = checkerboard_mask(3, 4, 0, tf.float32).numpy()[..., 0]
    i, j = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    np.testing.assert_array_equal(m, ((i + j) % 2 == 1).astype(np.float32))
    np.testing.assert_array_equal(checkerboard_mask(3, 4, 1, tf.float32).numpy()[..., 0], 1 - m)
    np.testing.assert_array_equal(channel_mask(4, 0, tf.float32).numpy(), [1, 1, 0, 0])
    np.testing.assert_array_equal(channel_mask(4, 1, tf.float32).numpy(), [0, 0, 1, 1])
    with pytest.raises(ValueError, match="even number of channels"):
        channel_mask(3, 0, tf.float32)


def test_new_coupling_is_exactly_identity():
    coupling = AffineCoupling(_conditioner(3, dtype="float32"), mask="checkerboard")
    x = tf.random.normal((2, 4, 4, 3))
    np.testing.assert_array_equal(coupling.inverse(x).numpy(), x.numpy())
    np.testing.assert_array_equal(coupling.inverse_log_det_jacobian(x, event_ndims=3).numpy(), [0, 0])


def test_log_scale_is_bounded_by_learned_scale():
    conditioner = _conditioner(2)
    coupling = AffineCoupling(conditioner, mask="channel")
    x = 100.0 * tf.random.normal((4, 4, 4, 2), dtype=tf.float64)
    coupling.inverse(x)
    perturb_weights([conditioner], scale=5.0)
    _, log_scale = conditioner(x * coupling.mask(x))
    bound = np.abs(conditioner.scale.numpy())
    assert np.all(np.abs(log_scale.numpy()) <= bound + 1e-12)


def test_conditioner_sees_only_unchanged_part():
    seen = []

    def conditioner(masked, training=False, context=None):
        seen.append(masked)
        return tf.zeros_like(masked), 0.5 * masked

    coupling = AffineCoupling(conditioner, mask="checkerboard", parity=1)
    x = tf.random.normal((1, 4, 4, 1), dtype=tf.float64)
    coupling.inverse(x)
    b = coupling.mask(x).numpy()
    np.testing.assert_array_equal(seen[0].numpy(), x.numpy() * b)


def test_bad_arguments():
    with pytest.raises(ValueError, match="parity"):
        AffineCoupling(lambda x, training: (x, x), parity=2)
    with pytest.raises(ValueError, match="mask must be one of"):
        AffineCoupling(lambda x, training: (x, x), mask="stripes")
    with pytest.raises(ValueError, match="event_ndims=3"):
        AffineCoupling(lambda x, training: (x, x), mask="checkerboard", event_ndims=1)
    with pytest.raises(ValueError, match="zeros and ones"):
        AffineCoupling(lambda x, training: (x, x), mask=np.array([0, 2]), event_ndims=1)


def test_modes_are_call_arguments_and_never_served_from_each_others_cache():
    """The conditioner's batch norm differs between modes; the cache, keyed on the
    call arguments, must keep the two results apart for the same tensor."""
    conditioner = _conditioner(2)
    coupling = AffineCoupling(conditioner, mask="checkerboard")
    x = 3.0 + 2.0 * tf.random.normal((8, 4, 4, 2), dtype=tf.float64)
    coupling.inverse(x, training=True)
    perturb_weights([conditioner], scale=0.3)
    y_eval = coupling.inverse(x, training=False)  # Held: the cache entry stays alive.
    norms = [n for n in conditioner._flatten_layers() if hasattr(n, "num_updates")]
    before = [float(n.num_updates) for n in norms]
    y_train = coupling.inverse(x, training=True)
    assert np.abs(y_train.numpy() - y_eval.numpy()).max() > 1e-3
    # One training call: every batch norm of the conditioner updated once,
    # also when the log-det is asked for next (same arguments: cached).
    coupling.inverse_log_det_jacobian(x, event_ndims=3, training=True)
    assert [float(n.num_updates) for n in norms] == [b + 1 for b in before]
    # Each result is the one an uncached computation in its mode gives now
    # (the evaluation result before the update; fresh tensors see updates).
    assert coupling.inverse(x, training=False) is y_eval
    fresh = coupling.inverse(tf.identity(x), training=False)
    assert np.abs(fresh.numpy() - y_eval.numpy()).max() > 1e-4
    assert coupling.inverse(x, training=True) is y_train


def test_context_reaches_the_conditioner_and_keys_the_cache():
    seen = []

    def conditioner(masked, training=False, context=None):
        seen.append(context)
        shift = tf.zeros_like(masked) if context is None else (
            tf.zeros_like(masked) + tf.cast(context[:, None, None, :1], masked.dtype))
        return shift, tf.zeros_like(masked)

    coupling = AffineCoupling(conditioner, mask="channel")
    x = tf.random.normal((2, 2, 2, 4), dtype=tf.float64)
    first, second = tf.constant([[1.0, 0.0], [0.0, 1.0]]), tf.constant([[3.0, 0.0], [2.0, 1.0]])
    y1 = coupling.inverse(x, context=first)
    y2 = coupling.inverse(x, context=second)
    assert seen[0] is first and seen[1] is second
    free = 1.0 - coupling.mask(x).numpy()
    # Shifts context[:, 0] (1, 0 then 3, 2) on the transformed half: both differ by 2.
    np.testing.assert_allclose(y2.numpy() - y1.numpy(), np.broadcast_to(2.0 * free, x.shape),
                               atol=1e-12)


def test_conditioner_called_once_per_log_det_pair():
    calls = []

    def conditioner(masked, training=False, context=None):
        calls.append(1)
        return 0.1 * masked, 0.2 * masked

    coupling = AffineCoupling(conditioner, mask="channel")
    x = tf.random.normal((2, 2, 2, 4), dtype=tf.float64)
    y = coupling.inverse(x)
    coupling.inverse_log_det_jacobian(x, event_ndims=3)
    assert len(calls) == 1
    coupling.forward_log_det_jacobian(y, event_ndims=3)  # Cached via the inverse.
    assert len(calls) == 1
    del y
