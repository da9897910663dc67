"""FusedChain: same results as tfb.Chain, each step evaluated once even in eager mode."""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfnvp.bijectors import AffineCoupling, FusedChain, LogitPreprocess

from bijector_checks import assert_exact_bijector

tfb = tfp.bijectors


class _CountingConditioner:
    def __init__(self, weight: float):
        self.weight = weight
        self.calls = 0

    def __call__(self, masked, training=False, context=None):
        self.calls += 1
        return self.weight * masked, tf.tanh(self.weight * masked)


def _steps():
    conditioners = [_CountingConditioner(w) for w in (0.3, -0.7, 0.5)]
    steps = [LogitPreprocess()] + [
        AffineCoupling(c, mask="checkerboard", parity=k % 2) for k, c in enumerate(conditioners)]
    return steps, conditioners


def test_matches_tfp_chain_and_is_exact():
    steps, _ = _steps()
    x = tf.random.uniform((3, 4, 4, 1), 0, 256, dtype=tf.float64)
    fused, plain = FusedChain(steps), tfb.Chain(steps)
    np.testing.assert_allclose(fused.inverse(x).numpy(), plain.inverse(x).numpy(), atol=1e-12)
    np.testing.assert_allclose(fused.inverse_log_det_jacobian(x, event_ndims=3).numpy(),
                               plain.inverse_log_det_jacobian(x, event_ndims=3).numpy(), atol=1e-10)
    z = tf.random.normal((2, 4, 4, 1), dtype=tf.float64)
    assert_exact_bijector(fused, z, event_ndims=3)


def test_each_step_runs_once_per_log_prob_in_eager_mode():
    steps, conditioners = _steps()
    base = tfp.distributions.Sample(tfp.distributions.Normal(tf.constant(0., tf.float64), 1.),
                                    [4, 4, 1])
    dist = tfp.distributions.TransformedDistribution(base, FusedChain(steps))
    dist.log_prob(tf.random.uniform((2, 4, 4, 1), 0, 256, dtype=tf.float64))
    assert [c.calls for c in conditioners] == [1, 1, 1]


def test_larger_event_ndims_falls_back_to_tfp():
    steps, _ = _steps()
    x = tf.random.uniform((3, 4, 4, 1), 0, 256, dtype=tf.float64)
    fused = FusedChain(steps)
    per_image = fused.inverse_log_det_jacobian(x, event_ndims=3).numpy()
    np.testing.assert_allclose(fused.inverse_log_det_jacobian(x, event_ndims=4).numpy(),
                               per_image.sum(), rtol=1e-12)


def test_bijectors_hash_and_compare_by_identity():
    """Identical-looking steps are distinct objects (each would read its own layers), a
    chain's hash does not walk its members' parameters, and a second inverse of the
    same tensor with the same kwargs is still served by TFP's cache."""
    (logit, *couplings), conditioners = _steps()
    twin = LogitPreprocess()
    assert logit == logit and logit != twin and hash(logit) != hash(twin)
    chain = FusedChain([logit, *couplings])
    assert chain != FusedChain([logit, *couplings])
    assert hash(chain) == hash(chain) and chain == chain
    x = tf.random.uniform((2, 4, 4, 1), 0, 256, dtype=tf.float64)
    first = chain.inverse(x)
    assert chain.inverse(x) is first and [c.calls for c in conditioners] == [1, 1, 1]
    chain.inverse(tf.identity(x))
    assert [c.calls for c in conditioners] == [2, 2, 2]
