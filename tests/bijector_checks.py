"""Exactness checks shared by every bijector test (float64, small shapes).

For a bijector ``b`` and latent points ``z`` (so ``x = b.forward(z)``):

* round trip: ``b.inverse(b.forward(z)) == z`` and ``b.forward(b.inverse(x)) == x``;
* ``forward_log_det_jacobian(z) == -inverse_log_det_jacobian(x)``;
* the log-det equals ``log|det J|`` of the numerical Jacobian
  (``tf.GradientTape.batch_jacobian`` flattened to ``[B, D, D]`` + ``slogdet``),
  in both directions;
* all of the above in eager mode and inside ``tf.function``;
* for a conditional bijector, all of the above given the same call arguments
  (``assert_exact_bijector(b, z, n, context=c)``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

ROUND_TRIP_ATOL = 1e-9
LOG_DET_ATOL = 1e-6


def numerical_log_det(fn, points: tf.Tensor) -> np.ndarray:
    """``log|det d fn(p) / d p|`` per batch element via ``batch_jacobian``."""
    with tf.GradientTape() as tape:
        tape.watch(points)
        out = fn(points)
    jac = tape.batch_jacobian(out, points)
    batch = points.shape[0]
    dim_in = int(np.prod(points.shape[1:]))
    dim_out = int(np.prod(out.shape[1:]))
    assert dim_in == dim_out, f"not square: {points.shape} -> {out.shape}"
    sign, logdet = np.linalg.slogdet(tf.reshape(jac, [batch, dim_out, dim_in]).numpy())
    assert np.all(sign != 0), "singular Jacobian"
    return logdet


def _directions(bijector, z, event_ndims, kwargs):
    # Every round trip starts from a fresh tensor (tf.identity): TFP's cache
    # would otherwise answer inverse(forward(z)) with z itself, unchecked.
    x = bijector.forward(z, **kwargs)
    fldj = bijector.forward_log_det_jacobian(z, event_ndims=event_ndims, **kwargs)
    z_back = bijector.inverse(tf.identity(x), **kwargs)
    x_again = bijector.forward(tf.identity(bijector.inverse(tf.identity(x), **kwargs)), **kwargs)
    ildj = bijector.inverse_log_det_jacobian(tf.identity(x), event_ndims=event_ndims, **kwargs)
    return x, fldj, z_back, x_again, ildj


def assert_exact_bijector(bijector, z, event_ndims: int,
                          graph_mode: bool = True, **kwargs) -> dict[str, float]:
    """Runs every check; returns the worst errors seen (for closing notes).

    ``graph_mode=False`` skips the ``tf.function`` repetition (for flows whose
    tracing is slow and whose steps are checked in graph mode one by one).
    ``kwargs`` (tfnvp's call arguments, e.g. ``context=``) go with every call.
    """
    z = tf.convert_to_tensor(z, tf.float64)
    worst = {"round_trip": 0.0, "log_det_vs_numerical": 0.0, "fldj_plus_ildj": 0.0}
    modes = [("eager", _directions)]
    if graph_mode:
        modes.append(("tf.function", tf.function(_directions)))
    for mode, run in modes:
        x, fldj, z_back, x_again, ildj = (t.numpy() for t in run(bijector, z, event_ndims,
                                                                 kwargs))
        batch_shape = tuple(z.shape[: z.shape.rank - event_ndims])
        # Constant log-dets may be returned unbroadcast (TFP allows it).
        assert np.broadcast_shapes(fldj.shape, batch_shape) == batch_shape, (mode, fldj.shape)
        np.testing.assert_allclose(z_back, z.numpy(), rtol=0, atol=ROUND_TRIP_ATOL, err_msg=mode)
        np.testing.assert_allclose(x_again, x, rtol=0, atol=ROUND_TRIP_ATOL * max(1.0, np.abs(x).max()),
                                   err_msg=mode)
        np.testing.assert_allclose(fldj, -ildj, rtol=0, atol=LOG_DET_ATOL, err_msg=mode)
        worst["round_trip"] = max(worst["round_trip"], float(np.abs(z_back - z.numpy()).max()))
        worst["fldj_plus_ildj"] = max(worst["fldj_plus_ildj"], float(np.abs(fldj + ildj).max()))
    fwd_numeric = numerical_log_det(lambda t: bijector.forward(t, **kwargs), z)
    x = bijector.forward(z, **kwargs)
    inv_numeric = numerical_log_det(lambda t: bijector.inverse(t, **kwargs), tf.identity(x))
    fldj = bijector.forward_log_det_jacobian(z, event_ndims=event_ndims, **kwargs).numpy()
    ildj = bijector.inverse_log_det_jacobian(tf.identity(x), event_ndims=event_ndims,
                                             **kwargs).numpy()
    np.testing.assert_allclose(fldj, fwd_numeric, rtol=0, atol=LOG_DET_ATOL)
    np.testing.assert_allclose(ildj, inv_numeric, rtol=0, atol=LOG_DET_ATOL)
    worst["log_det_vs_numerical"] = float(max(np.abs(fldj - fwd_numeric).max(),
                                              np.abs(ildj - inv_numeric).max()))
    return worst


def perturb_weights(layers, scale: float = 0.1, seed: int = 0) -> None:
    """Adds noise to every trainable weight (and sets non-trivial BN statistics).

    A new flow is the identity (zero-gain last layers); tests need a flow
    whose shifts and log-scales are far from zero.
    """
    rng = np.random.default_rng(seed)
    for layer in layers:
        for v in layer.trainable_weights:
            v.assign(v.numpy() + scale * rng.standard_normal(v.shape))
        for v in layer.non_trainable_weights:
            name = v.path if hasattr(v, "path") else v.name
            if "moving_variance" in name:
                v.assign(rng.uniform(0.5, 2.0, v.shape))
            elif "moving_mean" in name:
                v.assign(0.3 * rng.standard_normal(v.shape))
