"""Optimizers for training the flows: ``fused_adam`` (Keras' Adam with each variable's update
one fused kernel, for a smaller training graph) and ``adamax`` (the Adamax of Glow's release)."""
