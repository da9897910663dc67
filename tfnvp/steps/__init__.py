"""The step types of the multi-scale architecture and its declaration: ``multiscale`` declares
an architecture once as scales of steps (positions, squeezes, factor-outs), and each step type
builds one flow step at its position: ``coupling_step`` (Real NVP's affine coupling and batch
norm), ``glow_step`` (Glow's actnorm, invertible 1x1 convolution and coupling)."""
