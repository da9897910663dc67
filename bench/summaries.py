"""Reading scalars back from a run's TensorBoard event files (for bench/ scripts)."""

from __future__ import annotations

import glob
import os


def scalars(logdir: str, tag: str) -> dict[int, float]:
    """``{step: value}`` of the scalar summary ``tag`` in ``logdir``'s event files."""
    import tensorflow as tf

    values = {}
    for path in sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[event.step] = float(tf.make_ndarray(value.tensor))
    return values
