"""Glow's affine coupling (Kingma & Dhariwal 2018, section 3.3, Table 1 third row).

Glow splits the channels into halves ``x = [x_a, x_b]``, keeps ``x_a`` and,
in the data -> latent direction (this library's ``inverse``), maps::

    [t, h] = NN(x_a)                       (tfnvp.nets.GlowNet)
    s = sigmoid(h + 2)
    y_b = (x_b + t) * s                    (the authors' release; the paper
                                            prints s * x_b + t with s = exp(log s))
    log|det dy/dx| = sum over x_b's positions and channels of log s

That is Real NVP's coupling (eq. 9, ``tfnvp.bijectors.AffineCoupling``) with
a channel mask, ``log_scale = log sigmoid(h + 2)`` and
``shift = t * sigmoid(h + 2)``, since ``(x + t) s = x exp(log s) + t s``; the
sigmoid bounds the scale in ``(0, 1)`` -- Glow's stabilization, where Real
NVP uses ``scale * tanh``.  ``GlowAffineHead`` floors ``s`` at ``e^-7``
(ours; the sampling direction divides by ``s``, see ``tfnvp.nets.glow_net``).
So a Glow coupling *is* an ``AffineCoupling``
whose conditioner is a ``tfnvp.nets.GlowAffineHead``: no second coupling
implementation, and every property of ``AffineCoupling`` (one conditioner
evaluation per direction, the training mode, exactness) carries over.
``glow_coupling`` builds it with the mask matching the head.
"""

from __future__ import annotations

from typing import Any

from tfnvp.bijectors.coupling import AdditiveCoupling, AffineCoupling

__all__ = ["glow_coupling"]


def glow_coupling(head: Any, additive: bool = False,
                  name: str = "glow_coupling") -> AffineCoupling | AdditiveCoupling:
    """Glow's coupling: ``AffineCoupling`` on the channel mask of ``head.parity``, or with
    ``additive`` the ``AdditiveCoupling`` ``y_b = x_b + t(x_a)`` (the release's
    ``flow_coupling=0``; log-det 0).

    Args:
      head: a ``tfnvp.nets.GlowAffineHead`` (``additive``: a ``GlowAdditiveHead``), owned by
        the model; its ``parity`` says which half of the channels is kept.
      additive: the additive coupling.

    Example::

        head = tfnvp.nets.GlowAffineHead(tfnvp.nets.GlowNet(out_channels=12), channels=12)
        coupling = glow_coupling(head)
        y = coupling.inverse(x)        # y_b = (x_b + t) * sigmoid(h + 2)
    """
    kind = AdditiveCoupling if additive else AffineCoupling
    return kind(head, mask="channel", parity=head.parity, event_ndims=3, name=name)
