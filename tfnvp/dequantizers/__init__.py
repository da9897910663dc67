"""Dequantization: from 8-bit images to continuous data the flows model, and its bits/dim
accounting.  ``uniform`` adds uniform noise (Real NVP, Glow); ``variational`` learns the noise
distribution with a conditional flow (Flow++, Ho et al., ICML 2019, section 3.1)."""
