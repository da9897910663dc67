"""tfnvp: Real NVP (Dinh, Sohl-Dickstein & Bengio, ICLR 2017) in TF2, Keras 3 and TFP."""

from tfnvp import bijectors, nets
from tfnvp.model import PAPER_CONFIGS, RealNVP, bits_per_dim_from_log_prob

__all__ = ["PAPER_CONFIGS", "RealNVP", "bijectors", "bits_per_dim_from_log_prob", "nets"]
__version__ = "0.1.0"
