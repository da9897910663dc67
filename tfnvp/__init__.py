"""tfnvp: Real NVP (Dinh, Sohl-Dickstein & Bengio, ICLR 2017) in TF2, Keras 3 and TFP."""

from tfnvp import bijectors, conditional, grid, latent, multiscale, nets, toy_data
from tfnvp.bijectors.piecewise_linear import PiecewiseLinearFlow
from tfnvp.dense import DenseRealNVP
from tfnvp.dequantization import UniformDequantizer, bits_per_dim_from_log_prob, dequantize
from tfnvp.glow import GLOW_PAPER_CONFIGS, Glow, glow_latent_scale_index
from tfnvp.glow_step import GlowStep
from tfnvp.image_flow import ImageFlowModel
from tfnvp.model import PAPER_CONFIGS, RealNVP, latent_scale_index
from tfnvp.runs import load_run
from tfnvp.variational_dequantization import VariationalDequantizer

__all__ = ["DenseRealNVP", "GLOW_PAPER_CONFIGS", "Glow", "GlowStep", "ImageFlowModel",
           "PAPER_CONFIGS", "PiecewiseLinearFlow", "RealNVP", "UniformDequantizer",
           "VariationalDequantizer",
           "bits_per_dim_from_log_prob", "bijectors", "conditional", "dequantize",
           "glow_latent_scale_index", "grid", "latent", "latent_scale_index", "load_run",
           "multiscale", "nets", "toy_data"]
__version__ = "0.2.0"
