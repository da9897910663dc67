"""Polyak averaging of the weights (Flow++): evaluation with exponential moving averages.

With ``--polyak_decay=d > 0`` the optimizer (Keras' ``use_ema``,
``steps.make_optimizer``) keeps, for every trainable weight ``w``, the average

    a_1 = w_1,    a_t = d * a_{t-1} + (1 - d) * w_t,

``w_t`` being the weights after the ``t``-th applied update (Keras starts the
average at the first update's weights; a skipped, non-finite step applies no
update and leaves the averages alone).  Flow++'s release evaluates such
averages (``d = 0.999``; Glow's keeps them, ``d = 1 - 1/782``, but evaluates
its raw weights).  Training goes on from the raw weights ``w``;
everything evaluation-mode (held-out bits/dim, sample grids, the batch-norm
recalibration that precedes them, ``--mode=eval``/``export``, ``tfnvp.load_run``)
uses ``a``: ``AveragedWeights`` swaps them in on every replica and back.

The checkpoint reaches the averages twice, as optimizer state and under
``tfnvp.io.runs.POLYAK_KEY`` (the same variables, saved once), with the decay
under ``tfnvp.io.runs.POLYAK_DECAY_KEY``, so that a model can be given its
averages without the optimizer (``tfnvp.io.runs.restore_polyak_averages``).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import keras
import tensorflow as tf

from tfnvp.io import runs

__all__ = ["averages_of", "AveragedWeights", "checkpoint_objects"]


def averages_of(optimizer: keras.optimizers.Optimizer) -> list:
    """The Polyak averages a built ``make_optimizer`` optimizer keeps (``[]``: none), in the
    order of the variables it was built with."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # LossScaleOptimizer.
    if not inner.use_ema:
        return []
    if not hasattr(inner, "_model_variables_moving_average"):
        raise RuntimeError("This Keras version keeps no Optimizer._model_variables_moving_average "
                           "with use_ema=True: trainers/polyak.py must be revisited.")
    return list(inner._model_variables_moving_average)


def checkpoint_objects(optimizer: keras.optimizers.Optimizer, decay: tf.Variable) -> dict:
    """The ``tf.train.Checkpoint`` entries naming the optimizer's averages and their
    ``decay`` (a variable, so each checkpoint records it); none without averages."""
    averages = averages_of(optimizer)
    if not averages:
        return {}
    return {runs.POLYAK_KEY: runs.PolyakAverages(averages), runs.POLYAK_DECAY_KEY: decay}


class AveragedWeights:
    """``with averaged_weights():`` the model's trainable weights are the optimizer's
    Polyak averages; on exit the raw weights are put back exactly.

    The assignments run in cross-replica context under ``strategy``, so every
    local replica's copy changes; in multi-worker training each worker that
    enters the context swaps its own copies.  Without averages the context
    changes nothing.
    """

    def __init__(self, variables: list, optimizer: keras.optimizers.Optimizer,
                 strategy: tf.distribute.Strategy, decay: float):
        self.variables = list(variables)
        self.averages = averages_of(optimizer)
        self.strategy = strategy
        self.description = runs.describe_weights(decay if self.averages else 0.0)
        if self.averages and len(self.averages) != len(self.variables):
            raise ValueError(f"The optimizer averages {len(self.averages)} variables, the model "
                             f"has {len(self.variables)} trainable ones.")

    def initialize(self) -> None:
        """Starts the averages at the current weights (before the first update)."""
        with self.strategy.scope():
            for average, variable in zip(self.averages, self.variables):
                average.assign(variable.value)

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        if not self.averages:
            yield
            return
        with self.strategy.scope():
            raw = [tf.identity(variable.value) for variable in self.variables]
            for variable, average in zip(self.variables, self.averages):
                variable.assign(average.value)
        try:
            yield
        finally:
            with self.strategy.scope():
                for variable, value in zip(self.variables, raw):
                    variable.assign(value)
