"""The model specification ``trainers/train.py`` builds from its flags, for tests that check
a flag reaches the model (``trainers/model_flags.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import tfnvp
from trainers import model_flags, train


def trainer_spec(*flags: str, dataset: str = "digits",
                 shape: Sequence[int] = (8, 8, 1)) -> tfnvp.ImageFlowSpec:
    """``model_flags.model_spec`` of ``train.py --dataset=DATASET FLAGS...`` for images of
    ``shape`` (flags restored to their defaults afterwards)."""
    train.FLAGS.unparse_flags()
    train.FLAGS(train.resolve_flagfiles(["train.py", "--train_steps=1", f"--dataset={dataset}",
                                         *flags]))
    try:
        return model_flags.model_spec(train.FLAGS, dataset, shape, None, None)
    finally:
        train.FLAGS.unparse_flags()
