"""The models: Keras models that own a normalizing flow and its prior and give log-densities,
the training objective, samples and encodings.  ``flow_model`` is the engine they share,
``image_flow`` the image models' common part (dequantization, logit map, multi-scale
architecture), and one module per model family: ``realnvp`` (Real NVP), ``glow`` (Glow),
``dense`` (Real NVP on vectors), ``piecewise_linear_flow`` (1-D data); ``conditional`` holds the
class-conditional prior and label checks and ``checked_distribution`` the event-shape check."""
