"""Experiment tools around trained models: ``latent`` (latent-space experiments of the Real NVP
paper: temperature samples, manifolds, compression), ``grid`` (image grids and PNG files) and
``toy_data`` (toy densities for the 1-D and 2-D flows, NumPy only)."""
