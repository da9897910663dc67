"""Where a command's run lives: the default run directory, the start-up line, a clean failed start.

* **Default run directory.** Without ``--output_dir`` a run goes to ``runs/<flagfile name>``
  (``--flagfile=cifar.flags`` -> ``runs/cifar``), else ``runs/<dataset>``, relative to the
  working directory; the same command started again resumes it.
* **Start-up line.** ``Run directory: runs/cifar (new run)``, ``(resuming at step N)``, or
  for a run that already reached ``--train_steps``, ``(this run is complete (step N of N); raise
  --train_steps to continue)``: the command then stops there.
* **Failed start.** When the command fails before the run's first checkpoint, what it created
  is removed: the run directory if it made it, else the run's own entries it added to an
  existing directory (the user's files stay). Nothing could resume from them, and a
  ``config.json`` left there would pin flags of a run that never started.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator, Sequence

import tensorflow as tf
from absl import logging

RUNS_DIR = "runs"
_FLAGFILE_PREFIXES = ("--flagfile=", "-flagfile=")


def last_flagfile(argv: Sequence[str]) -> str | None:
    """The last ``--flagfile=PATH`` of a command line, as written."""
    paths = [arg[len(prefix):] for arg in argv for prefix in _FLAGFILE_PREFIXES
             if arg.startswith(prefix)]
    return paths[-1] if paths else None


def default_output_dir(flagfile: str | None, dataset: str | None) -> str:
    """``runs/<flagfile name without .flags>``, else ``runs/<dataset>``."""
    if flagfile:
        name = os.path.basename(flagfile)
        name = name[: -len(".flags")] if name.endswith(".flags") else os.path.splitext(name)[0]
    elif dataset:
        name = dataset
    else:
        from tfnvp import UsageError

        raise UsageError("--output_dir is needed: there is no --flagfile or --dataset to name "
                         "a default run directory after.")
    return os.path.join(RUNS_DIR, name)


def latest_checkpoint(output_dir: str) -> str | None:
    """The run's newest checkpoint with an ``.index`` (path prefix), or None; the
    files decide, not the state file (which may be damaged)."""
    from trainers import checkpoints, run_dir  # They import TF / the model: only when asked.

    return checkpoints.newest_with_index(run_dir.checkpoint_dir(output_dir))


def latest_step(output_dir: str) -> int | str | None:
    """The step of the run's newest checkpoint; its path if the step cannot be read; None
    without a checkpoint."""
    path = latest_checkpoint(output_dir)
    if path is None:
        return None
    from trainers import evaluation

    try:
        return evaluation.checkpoint_step(path)
    except Exception:  # noqa: BLE001 - damaged files fail in many ways (e.g. IndexError
        # "Read less bytes"); training itself skips the checkpoint and says why.
        return path


def is_complete(output_dir: str, step: int | str | None, train_steps: int | None) -> bool:
    """Whether the run has nothing to train for ``--train_steps``: its newest checkpoint
    (at ``step``, ``latest_step``) is that far and every tensor of it reads back, checksums
    verified.  A damaged one is left to training, which resumes from the newest intact
    checkpoint."""
    if not (isinstance(step, int) and train_steps is not None and step >= train_steps):
        return False
    try:
        reader = tf.train.load_checkpoint(latest_checkpoint(output_dir))
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except Exception:  # noqa: BLE001 - as in latest_step.
        return False
    return True


def describe(output_dir: str, step: int | str | None = None, training: bool = False,
             complete: bool = False, train_steps: int | None = None) -> str:
    """The start-up line naming the run directory (and, for training, the run's state:
    new, resumed at ``step`` (``latest_step``), or ``complete`` (``is_complete``) for
    ``train_steps``)."""
    if not training:
        return f"Run directory: {output_dir}"
    if step is None:
        state = "new run"
    elif complete:
        state = (f"this run is complete (step {step} of {train_steps}); raise --train_steps "
                 "to continue")
    elif isinstance(step, int):
        state = f"resuming at step {step}"
    else:
        state = f"resuming from {step}"
    return f"Run directory: {output_dir} ({state})"


def _run_entries() -> set[str]:
    """The top-level files and folders a training run writes into its directory (the lock
    aside, which the trainer removes on every exit)."""
    from trainers import evaluation, run_dir, training  # They import TF / the model.

    return {run_dir.CONFIG_FILE, run_dir.CHECKPOINT_DIR, training.TENSORBOARD_DIR,
            evaluation.SAMPLES_DIR}


@contextlib.contextmanager
def removed_if_unstarted(output_dir: str) -> Iterator[None]:
    """If the block fails and left no checkpoint in ``output_dir``, removes what it created
    there: the directory itself if it did not exist, else the run's entries (``config.json``,
    ``checkpoints/``, ``tensorboard/``, ``samples/``) that were not there before.  Nothing
    else in an existing directory (the user's files, an earlier run's entries) is touched."""
    existed = os.path.isdir(output_dir)
    before = set(os.listdir(output_dir)) if existed else set()
    try:
        yield
    except Exception:
        if os.path.isdir(output_dir) and latest_checkpoint(output_dir) is None:
            if not existed:
                shutil.rmtree(output_dir, ignore_errors=True)
                logging.info("Removed %s: the run failed before its first checkpoint.",
                             output_dir)
            else:
                created = sorted((set(os.listdir(output_dir)) - before) & _run_entries())
                for name in created:
                    path = os.path.join(output_dir, name)
                    if os.path.isdir(path):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        os.remove(path)
                if created:
                    logging.info("Removed %s from %s: the run failed before its first "
                                 "checkpoint.", ", ".join(created), output_dir)
        raise
