"""Logistic-mixture CDF coupling (Flow++, Ho, Chen, Srinivas, Duan & Abbeel, ICML 2019, section 3.2).

Data ``x`` -> latent ``y`` (the paper's ``f``, this bijector's **inverse**):
the entries where the mask ``b`` is 1 pass unchanged, the others map
elementwise as ::

    y = exp(a) * logit(F(x; pi, mu, s)) + b                          (Flow++ section 3.2)
    F(x; pi, mu, s) = sum_k pi_k * sigmoid((x - mu_k) * exp(-s_k))   (MixLogCDF)

with ``a, b, pi, mu, s`` (``K`` components) computed by the conditioner from
the unchanged entries (``tfnvp.nets.LogisticMixtureParameters``: ``a =
scale * tanh(raw)``, ``-7 <= s_k < 2``).  ``F`` is strictly increasing from 0 to
1, so the map is a bijection of the real line.  Its exact log-det, with
``u_k = (x - mu_k) exp(-s_k)`` and ``c = F(x)``::

    log dy/dx = a + log F'(x) - log c - log(1 - c)
    log F'(x) = logsumexp_k(log pi_k + log sigmoid(u_k) + log sigmoid(-u_k) - s_k)
    log c     = logsumexp_k(log pi_k + log sigmoid(u_k))
    log(1-c)  = logsumexp_k(log pi_k + log sigmoid(-u_k))

everything in log space, so neither ``c`` nor ``1 - c`` is ever formed and
far tails (``|u_k|`` in the hundreds) stay exact; ``logit(c) = log c -
log(1 - c)``.

Latent -> data (``forward``, sampling) has no closed form: with the target
``t = (y - b) exp(-a) = logit(c)``, the root of the increasing ``G(x) =
logit F(x) - t`` is bracketed by the component quantiles ``q_k = mu_k +
exp(s_k) t`` (at ``min_k q_k`` every component CDF is ``<= sigmoid(t)``, at
``max_k q_k`` every one is ``>=``), and found by bisection on ``G`` with a
fixed number of steps (``BISECTION_STEPS``: 48 in float32, 96 in float64,
so the loop traces once): the bracket shrinks to ``(max_k q_k - min_k q_k) *
2**-steps``.  One Newton step on ``G`` from the bisection's midpoint
follows; it polishes the root (quadratic convergence) and, as ``x = x0 -
(G(x0) - t) / G'(x0)`` with ``x0`` held constant, carries the exact
implicit-function gradient ``dx = (dt - dG) / G'``, so ``forward`` is
differentiable (numerical Jacobians, reverse-KL training).  Where the slope
underflows (inputs near 1e14 in float32) the step would be ``0 * inf``; the
midpoint is kept there.

Tolerance: after the bisection ``|x0 - root| <= (max_k q_k - min_k q_k) *
2**-steps``; after the Newton step round trips ``inverse(forward(y))`` and
``forward(inverse(x))`` agree to a few units in the last place, relative to
``max(1, |value|)``: measured at most 4e-16 in float64 and 2.4e-7 in float32,
down to far tails (``|y|`` up to 1e5); ``tests/test_logistic_mixture_coupling.py``
asserts 1e-12 (float64) and 2e-5 (float32).
"""

from __future__ import annotations

import tensorflow as tf

from tfnvp.bijectors.coupling import MaskedCoupling
from tfnvp.running_average import Training

__all__ = ["LogisticMixtureCoupling", "BISECTION_STEPS", "mixture_log_cdfs",
           "mixture_log_pdf", "mixture_logit_cdf_inverse"]

#: Bisection steps of ``forward`` by dtype name (the bracket shrinks by ``2**-steps``).
BISECTION_STEPS = {"float32": 48, "float64": 96}


def _standardized(x: tf.Tensor, means: tf.Tensor, log_scales: tf.Tensor) -> tf.Tensor:
    return (x[..., None] - means) * tf.exp(-log_scales)


def mixture_log_cdfs(x: tf.Tensor, log_weights: tf.Tensor, means: tf.Tensor,
                     log_scales: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(log F(x), log(1 - F(x)))`` of the logistic mixture, computed in log space.

    ``x`` has shape ``[...]``, the parameters ``[..., K]``.
    """
    u = _standardized(x, means, log_scales)
    return (tf.reduce_logsumexp(log_weights + tf.math.log_sigmoid(u), axis=-1),
            tf.reduce_logsumexp(log_weights + tf.math.log_sigmoid(-u), axis=-1))


def mixture_log_pdf(x: tf.Tensor, log_weights: tf.Tensor, means: tf.Tensor,
                    log_scales: tf.Tensor) -> tf.Tensor:
    """``log F'(x)``, the log-density of the logistic mixture."""
    u = _standardized(x, means, log_scales)
    return tf.reduce_logsumexp(
        log_weights + tf.math.log_sigmoid(u) + tf.math.log_sigmoid(-u) - log_scales, axis=-1)


def _log_slope(x: tf.Tensor, log_weights: tf.Tensor, means: tf.Tensor,
               log_scales: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(logit F(x), log d logit F(x) / dx)``."""
    log_c, log_1mc = mixture_log_cdfs(x, log_weights, means, log_scales)
    return log_c - log_1mc, mixture_log_pdf(x, log_weights, means, log_scales) - log_c - log_1mc


@tf.function(reduce_retracing=True, autograph=False)
def _bisect(target: tf.Tensor, log_weights: tf.Tensor, means: tf.Tensor,
            log_scales: tf.Tensor) -> tf.Tensor:
    """Midpoint of the bracket after ``BISECTION_STEPS`` halvings (constant inputs).

    A ``tf.function``: eager callers run the loop as one graph (inlined when
    traced inside another function).
    """
    quantiles = means + tf.exp(log_scales) * target[..., None]

    def halve(lo: tf.Tensor, hi: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        mid = lo + 0.5 * (hi - lo)
        below = _log_slope(mid, log_weights, means, log_scales)[0] < target
        return tf.where(below, mid, lo), tf.where(below, hi, mid)

    lo, hi = tf.while_loop(lambda lo, hi: True, halve,
                           (tf.reduce_min(quantiles, axis=-1), tf.reduce_max(quantiles, axis=-1)),
                           maximum_iterations=BISECTION_STEPS[target.dtype.name])
    return lo + 0.5 * (hi - lo)


def mixture_logit_cdf_inverse(target: tf.Tensor, log_weights: tf.Tensor, means: tf.Tensor,
                              log_scales: tf.Tensor) -> tf.Tensor:
    """The ``x`` with ``logit F(x) = target``: bisection, then one Newton step.

    See the module docstring (bracket, ``BISECTION_STEPS``, the gradient).
    """
    x0 = _bisect(*(tf.stop_gradient(t) for t in (target, log_weights, means, log_scales)))
    # The function's relaxed signature loses the static shape; restore it.
    x0 = tf.stop_gradient(tf.ensure_shape(x0, target.shape))
    logit, log_slope = _log_slope(x0, log_weights, means, log_scales)
    # Far out (|x0| ~ 1e14 in float32) the slope can underflow: exp(-log_slope) = inf
    # and 0 * inf = NaN.  There the bisection's midpoint is kept (the inner wheres keep
    # the step's gradient finite as well).
    usable = tf.math.is_finite(logit) & tf.math.is_finite(tf.exp(-log_slope))
    step = (tf.where(usable, logit, target) - target) * tf.exp(-tf.where(usable, log_slope, 0.0))
    return x0 - tf.where(usable, step, tf.zeros_like(step))


class LogisticMixtureCoupling(MaskedCoupling):
    """Flow++'s logistic-mixture CDF coupling (see the module docstring for the math).

    Math (data ``x`` -> latent ``y`` is ``inverse``), on the entries with ``b = 0``::

        inverse(x) = exp(a) * logit(F(x)) + b            Flow++ section 3.2
        forward(y) = F^-1(sigmoid((y - b) exp(-a)))      bisection + Newton step
        inverse_log_det_jacobian(x) = sum((1-b) * (a + log F'(x) - log F(x) - log(1 - F(x))))

    Args (``mask``, ``parity``, ``event_ndims`` as in ``MaskedCoupling``):
      conditioner: normally a ``tfnvp.nets.LogisticMixtureParameters`` mapping
        ``b * x``, ``training=`` and ``context=`` to ``(a, b, log_weights,
        means, log_scales)``, the first two of the shape of ``x``, the others
        with a trailing axis of ``K`` components.

    Call arguments (``tfnvp.bijectors.base``): ``training`` and ``context``
    are handed to the conditioner.

    Example::

        net = tfnvp.nets.LogisticMixtureParameters(
            tfnvp.nets.ResNet(32, 2, out_channels=(3 * 4 + 2) * 3), channels=3, components=4)
        coupling = LogisticMixtureCoupling(net, mask="checkerboard", parity=0)
        y = coupling.inverse(x)                         # data -> latent, closed form
        x_again = coupling.forward(tf.identity(y))      # latent -> data, bisection
    """

    default_name = "logistic_mixture_coupling"

    def _coupling_parameters(self, value: tf.Tensor, mask: tf.Tensor, training: Training,
                             context: tf.Tensor | None) -> list[tf.Tensor]:
        return [tf.cast(p, value.dtype)
                for p in self._conditioner_outputs(value * mask, training, context)]

    def _augmented_inverse(self, x: tf.Tensor, training: Training = False,
                           context: tf.Tensor | None = None
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        mask = self.mask(x)
        log_scale, shift, *mixture = self._coupling_parameters(x, mask, training, context)
        logit, log_slope = _log_slope(x, *mixture)
        y = x * mask + (1.0 - mask) * (tf.exp(log_scale) * logit + shift)
        ildj = self._sum_event((1.0 - mask) * (log_scale + log_slope))
        return y, {"ildj": ildj, "fldj": -ildj}

    def _augmented_forward(self, y: tf.Tensor, training: Training = False,
                           context: tf.Tensor | None = None
                           ) -> tuple[tf.Tensor, dict[str, tf.Tensor]]:
        mask = self.mask(y)
        log_scale, shift, *mixture = self._coupling_parameters(y, mask, training, context)
        root = mixture_logit_cdf_inverse((y - shift) * tf.exp(-log_scale), *mixture)
        x = y * mask + (1.0 - mask) * root
        fldj = -self._sum_event((1.0 - mask) * (log_scale + _log_slope(root, *mixture)[1]))
        return x, {"fldj": fldj, "ildj": -fldj}
