"""tfnvp: Real NVP (Dinh, Sohl-Dickstein & Bengio, ICLR 2017) in TF2, Keras 3 and TFP."""

import os as _os
import sys as _sys

# TensorFlow's oneDNN CPU kernels: on by default where TensorFlow leaves them off
# (AVX2-only CPUs among them; there they train and evaluate tfnvp's models about
# 1.4x as fast as the default kernels).  TensorFlow reads the variable once, when it
# loads: imported before tensorflow, tfnvp sets it unless the user has;
# imported after, it says once how to get them (``_compat.report_cpu_kernels``).
_ONEDNN_CHOSEN = "tensorflow" not in _sys.modules and "TF_ENABLE_ONEDNN_OPTS" not in _os.environ
if _ONEDNN_CHOSEN:
    _os.environ["TF_ENABLE_ONEDNN_OPTS"] = "1"

from tfnvp import _compat, bijectors, graph_optimization, nets
from tfnvp.dequantizers.uniform import (UniformDequantizer, bits_per_dim_from_log_prob,
                                        dequantize)
from tfnvp.dequantizers.variational import VariationalDequantizer
from tfnvp.errors import UsageError
from tfnvp.experiments import grid, latent, toy_data
from tfnvp.io.runs import load_run
from tfnvp.models import conditional
from tfnvp.models.dense import DenseRealNVP
from tfnvp.models.objective import Objective
from tfnvp.models.glow import GLOW_PAPER_CONFIGS, Glow, GlowSpec, glow_latent_scale_index
from tfnvp.models.image_flow import ImageFlowModel
from tfnvp.models.piecewise_linear_flow import PiecewiseLinearFlow
from tfnvp.models.realnvp import PAPER_CONFIGS, RealNVP, RealNVPSpec, latent_scale_index
from tfnvp.models.spec import ConditionerSpec, ImageFlowSpec
from tfnvp.optimizers.adamax import GlowAdamax
from tfnvp.optimizers.fused_adam import FusedAdam
from tfnvp.steps import multiscale
from tfnvp.steps.glow_step import GlowStep

__all__ = ["ConditionerSpec", "DenseRealNVP", "FusedAdam", "GLOW_PAPER_CONFIGS", "Glow", "GlowAdamax",
           "GlowSpec", "GlowStep", "ImageFlowModel", "ImageFlowSpec", "Objective", "PAPER_CONFIGS",
           "PiecewiseLinearFlow", "RealNVP", "RealNVPSpec", "UniformDequantizer",
           "UsageError", "VariationalDequantizer",
           "bits_per_dim_from_log_prob", "bijectors", "conditional", "dequantize",
           "glow_latent_scale_index", "graph_optimization", "grid", "latent",
           "latent_scale_index", "load_run", "multiscale", "nets", "toy_data"]
__version__ = "0.2.0"

_compat.report_cpu_kernels()
# A user's ``tf.function`` calls tfnvp's functions as written, as it calls TFP's and Keras':
# AutoGraph's conversion of them cost part of the first trace and bought nothing.
_compat.call_unconverted_by_autograph(__name__)
