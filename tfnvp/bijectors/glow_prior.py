"""Glow's learned priors as bijectors (the authors' release, openai/glow: ``split2d_prior``,
``learntop``; their networks: ``tfnvp.nets.glow_prior``).

A Gaussian prior ``z ~ N(mu, sigma^2)`` is the standard normal on ``eps = (z -
mu) * exp(-log_sigma)``, so in the data -> latent direction (this library's
``inverse``) a learned prior is the affine step::

    eps = (z - mu) * exp(-log_sigma)
    log|det d eps / dz| = -sum log_sigma

and the flow's base distribution stays ``N(0, I)``.  Both priors are
``AffineCoupling`` s whose conditioner is a ``tfnvp.nets.GaussianPriorHead``:

* ``split_prior``: at a ``FactorOut``, of the squeezed tensor ``[z, h]`` the
  first half ``z`` leaves the flow and the second ``h`` goes on; ``(mu,
  log_sigma) = NN(h)``, the channel mask of parity 1 (``h`` unchanged);
* ``top_prior``: on the top latent, ``(mu, log_sigma) = NN(0)``, the all-zero
  mask (every channel transformed; the conditioner sees zeros).

The log-det is that of ``AffineCoupling``: exact, one conditioner call per
direction.
"""

from __future__ import annotations

import numpy as np

from tfnvp.bijectors.coupling import AffineCoupling
from tfnvp.nets.glow_prior import GaussianPriorHead

__all__ = ["learned_prior"]


def learned_prior(head: GaussianPriorHead, name: str = "learned_prior") -> AffineCoupling:
    """The affine step ``eps = (z - mu) * exp(-log_sigma)`` of ``head``'s prior (``kind``
    ``"split"``: the first half of the channels, conditioned on the second; ``"top"``:
    every channel).

    Example::

        head = tfnvp.nets.glow_prior.GaussianPriorHead(channels=12, kind="split")
        prior = learned_prior(head)
        eps = prior.inverse(z)     # [(z_a - mu(z_b)) * exp(-log_sigma(z_b)), z_b]
    """
    if head.kind == "split":
        return AffineCoupling(head, mask="channel", parity=1, event_ndims=3, name=name)
    return AffineCoupling(head, mask=np.zeros(head.channels), event_ndims=3, name=name)
