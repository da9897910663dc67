"""Real NVP's steps as TensorFlow Probability bijectors.

Convention (TFP's): ``forward`` maps latent to data (sampling) and
``log_prob`` runs ``inverse``, so the paper's data -> latent map ``f`` is
every bijector's ``inverse``.
"""

from tfnvp.bijectors.actnorm import ActNorm, ActNormParameters
from tfnvp.bijectors.base import FusedBijector
from tfnvp.bijectors.batch_norm import BatchNorm, BatchNormStatistics
from tfnvp.bijectors.coupling import (AdditiveCoupling, AffineCoupling, MaskedCoupling,
                                     channel_mask, checkerboard_mask)
from tfnvp.bijectors.chain import FusedChain
from tfnvp.bijectors.factor_out import FactorOut
from tfnvp.bijectors.glow_coupling import glow_coupling
from tfnvp.bijectors.invertible_conv import InvertibleConv1x1, InvertibleConv1x1Weights
from tfnvp.bijectors.logistic_mixture_coupling import LogisticMixtureCoupling
from tfnvp.bijectors.logit import LogitPreprocess
from tfnvp.bijectors.piecewise_linear import PiecewiseLinear, PiecewiseLinearParams
from tfnvp.bijectors.squeeze import Squeeze

__all__ = [
    "ActNorm", "ActNormParameters", "InvertibleConv1x1", "InvertibleConv1x1Weights", "glow_coupling",
    "AdditiveCoupling", "AffineCoupling", "BatchNorm", "BatchNormStatistics", "FactorOut",
    "FusedBijector", "FusedChain",
    "LogisticMixtureCoupling", "LogitPreprocess", "MaskedCoupling", "PiecewiseLinear", "PiecewiseLinearParams", "Squeeze", "channel_mask", "checkerboard_mask",
]
