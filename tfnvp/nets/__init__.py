"""Keras 3 conditioner networks for coupling layers."""

from tfnvp.nets.logistic_mixture_parameters import LogisticMixtureParameters
from tfnvp.nets.attention import GatedAttention
from tfnvp.nets.mlp import MLP
from tfnvp.nets.resnet import ResNet
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale
from tfnvp.nets.weight_norm import WeightNormConv2D

__all__ = ["GatedAttention", "LogisticMixtureParameters", "MLP", "ResNet", "ShiftAndLogScale",
           "WeightNormConv2D"]
