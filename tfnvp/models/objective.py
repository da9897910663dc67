"""The maximum-likelihood objective of a flow model and its parts (``FlowModel.objective``)."""

from __future__ import annotations

from typing import NamedTuple

import tensorflow as tf

__all__ = ["Objective"]


class Objective(NamedTuple):
    """The maximum-likelihood objective of a batch and its parts, one value per example.

    For an input ``x`` with labels ``y`` (class-conditional models only), the
    flow ``f`` (data -> latent) and its prior ``p_Z`` (``N(0, I)``, or
    ``N(mu_y, sigma_y^2)`` given ``y``), the change of variables (Real NVP,
    eq. (3)) gives::

        log p(x) = log p_Z(f(x)) + log|det df(x)/dx|      (log_prob = log_prior + log_det)

    Discrete data (8-bit images) are first dequantized, ``x = images + u`` with
    ``u ~ q(u | images)`` (uniform noise and ``log q = 0``, section 4.1, or a
    learned ``q``), and ``E_q[log p(x) - log q(u | images)] <= log P(images)``
    (the dequantization bound, ``tfnvp.dequantizers.uniform``), so the loss is::

        nll = -log p(x) + log q(u | images)               (log_q = 0 for continuous inputs)
        bits_per_dim = nll / (D ln 2)                     (D = dimensions of one event)

    the paper's bits/dim: the model's density is already on the 8-bit scale
    ``[0, 256)^D``, so no ``D log 256`` term (``bits_per_dim_from_log_prob``).

    ``loss`` is what training minimizes (its mean, plus the model's
    ``regularization_loss``): ``nll`` itself, except for a ``Glow`` with the
    release's classification loss (``weight_y > 0``), which also predicts the
    label ``y`` from the top latent and adds its cross entropy
    ``classification_nll = -log p(y | x)``::

        loss = nll + weight_y * D * classification_nll

    (the release minimizes ``bits_x + weight_y * bits_y``, both in bits: the same
    loss divided by ``D ln 2``).  ``classification_nll`` is 0 for every other
    model.  ``nll`` and ``bits_per_dim`` stay the likelihood's: what evaluation
    reports.  Every field is in nats but ``bits_per_dim``; shapes are the batch shape.
    """

    nll: tf.Tensor
    log_prob: tf.Tensor
    log_prior: tf.Tensor
    log_det: tf.Tensor
    log_q: tf.Tensor
    bits_per_dim: tf.Tensor
    classification_nll: tf.Tensor
    loss: tf.Tensor
