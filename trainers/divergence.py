"""Stopping a diverged run instead of training (and checkpointing) a broken model.

A step whose loss or gradients are not finite skips its update (see
``trainers/steps.py``).  An isolated skip is harmless, but a run whose every
update is skipped -- e.g. after a learning rate so large that the weights now
give a NaN loss on every batch -- would otherwise go on to its last step and
checkpoint that model.  ``SkippedUpdates`` counts consecutive skipped updates:

* while the count is non-zero, checkpoints due are postponed to the next
  applied update (``checkpoint_allowed``), so the newest checkpoint is always
  one taken right after an applied update;
* when the count reaches ``limit`` (``--max_consecutive_skipped``), the run
  stops with a ``TrainingError`` (exit status 1) naming the steps.  The
  weights of the step before the first skipped one gave its non-finite loss:
  a checkpoint of that step is moved to ``checkpoints/diverged/``, so the newest
  checkpoint is the last good one.

With float16 dynamic loss scaling an overflowing step with a finite loss is
the loss scale adjusting itself, not divergence: such steps do not count.
"""

from __future__ import annotations

import math

__all__ = ["SkippedUpdates"]


class SkippedUpdates:
    """Counts consecutive skipped updates; see the module docstring."""

    def __init__(self, limit: int, loss_scaled: bool = False):
        if limit < 1:
            raise ValueError(f"max_consecutive_skipped must be >= 1, got {limit}.")
        self.limit = limit
        self.loss_scaled = loss_scaled
        self.consecutive = 0
        self.first = 0
        self.loss = float("nan")

    def update(self, step: int, applied: bool, loss: float) -> bool:
        """Records ``step``; True once ``limit`` consecutive updates were skipped."""
        if applied or (self.loss_scaled and math.isfinite(loss)):
            self.consecutive = 0
            return False
        if self.consecutive == 0:
            self.first = step
        self.consecutive += 1
        self.loss = loss
        return self.consecutive >= self.limit

    @property
    def suspect_step(self) -> int:
        """The step whose weights gave the streak's first non-finite loss."""
        return self.first - 1

    def message(self, step: int, newest: str | None, set_aside: str | None) -> str:
        aside = (f" The checkpoint of step {self.suspect_step}, whose weights gave the first "
                 f"non-finite loss, was moved to {set_aside}." if set_aside else "")
        kept = (f"The newest checkpoint is {newest}, taken before the divergence" if newest
                else "No checkpoint from before the divergence exists")
        return (f"Training diverged: the updates of steps {self.first}..{step} "
                f"({self.consecutive} in a row, --max_consecutive_skipped={self.limit}) were all "
                f"skipped because the loss or gradients were not finite (last loss {self.loss})."
                f"{aside} {kept}. Lower --learning_rate or set --clip_grad_norm, then resume.")

    @property
    def checkpoint_allowed(self) -> bool:
        """Whether the model is the result of an applied update (no skip streak)."""
        return self.consecutive == 0
