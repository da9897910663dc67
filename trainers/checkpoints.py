"""Which checkpoint a run resumes from, and what a failed save leaves behind.

``tf.train.CheckpointManager`` writes ``ckpt-N.data-*`` and ``ckpt-N.index`` and
then the small ``checkpoint`` state file naming the newest one.  A restart that
trusted the state file alone would, with the newest ``.index`` deleted or the
state file garbled, see "no checkpoint", start a new run from step 0 and
overwrite the intact older checkpoints with the new run's.  Here instead:

* **Candidates** are every ``ckpt-N`` that any file in the directory or the
  state file names (whatever the state file's condition), newest first.
* **Restore** tries each candidate into the live objects with
  ``assert_consumed`` (every saved value restored, every variable covered;
  ``partial=True``, for eval/export/visualize of the model alone: every
  variable of the live objects restored):
  a missing or truncated ``.index``/``.data`` file fails with ``NotFound``,
  ``DataLoss`` or ``OutOfRange``, a foreign checkpoint with a mismatch.  The
  first one that restores completely wins; each one skipped is logged with the
  reason.  When candidates exist but none restores, ``CheckpointError`` is
  raised before anything is written: the run never silently starts over.
* **State repair.**  If the state file does not name the restored checkpoint
  (or anything was skipped), the chief rewrites it (atomically) to name it and the older intact ones, so that
  ``CheckpointManager`` rotates them as usual.  Damaged files are left in
  place for inspection; a later save of the same step replaces them.
* **Leftovers.**  ``ckpt-N_temp/`` directories of interrupted saves are
  removed; a save that fails (disk full, I/O error) removes its own partial
  files and raises ``CheckpointWriteError``: the previous checkpoint stays the
  newest one.

The reading half (candidates, restore, ``CheckpointError``) is the library's
``tfnvp.io.runs`` (which ``tfnvp.load_run`` uses); this module adds the logging,
the state repair and the writing side.

Every worker of a cluster runs the same candidate search over the same files,
so they all resume from the same checkpoint.
"""

from __future__ import annotations

import errno
import glob
import os
import re
import shutil
import time

import tensorflow as tf
from absl import logging

__all__ = ["PREFIX", "CheckpointError", "CheckpointWriteError", "Skipped", "candidates",
           "checkpoint_step", "first_line", "restore_error", "restore_newest_intact",
           "state_names", "write_state",
           "newest_with_index", "set_aside", "remove_leftovers", "remove_partial", "is_disk_full"]

from tfnvp.io.runs import (CheckpointError, Skipped, candidates, checkpoint_step, first_line,
                        restore_error)
from tfnvp.io import runs as _runs

PREFIX = _runs.CHECKPOINT_PREFIX
STATE_FILE = _runs.STATE_FILE


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous one is still the newest."""


def restore_newest_intact(checkpoint: tf.train.Checkpoint, directory: str,
                          partial: bool = False) -> tuple[str | None, list[Skipped]]:
    """``tfnvp.io.runs.restore_newest_intact`` with every skipped checkpoint logged.

    Returns ``(path, skipped)``; ``(None, [])`` when there is no checkpoint at
    all.  Raises ``CheckpointError`` if checkpoints exist and none restores.
    """
    try:
        path, skipped = _runs.restore_newest_intact(checkpoint, directory, partial)
    except CheckpointError as error:
        for item in error.skipped:
            logging.warning("Skipping checkpoint %s: %s", item.path, item.reason)
        raise
    for item in skipped:
        logging.warning("Skipping checkpoint %s: %s", item.path, item.reason)
    if skipped:
        logging.warning("Using %s, the newest checkpoint that restores completely "
                        "(%d newer one(s) skipped and left in place).", path, len(skipped))
    return path, skipped


def state_names(directory: str, path: str) -> bool:
    """Whether the state file is readable and names ``path`` as the newest checkpoint."""
    try:
        with tf.io.gfile.GFile(os.path.join(directory, STATE_FILE), "rb") as f:
            text = f.read().decode("utf-8", "replace")
    except (OSError, tf.errors.OpError):
        return False
    named = re.findall(r'^model_checkpoint_path: "([^"]*)"$', text, flags=re.M)
    return len(named) == 1 and os.path.basename(named[0]) == os.path.basename(path)


def write_state(directory: str, newest: str) -> None:
    """Rewrites the state file: ``newest`` and the older checkpoints with an ``.index``."""
    step = checkpoint_step(newest)
    kept = [path for path in reversed(candidates(directory))
            if checkpoint_step(path) < step and tf.io.gfile.exists(path + ".index")]
    paths = kept + [newest]
    now = time.time()  # Timestamps after `last_preserved`: the manager rotates them as usual.
    tf.compat.v1.train.update_checkpoint_state(
        directory, newest, all_model_checkpoint_paths=paths,
        all_model_checkpoint_timestamps=[now - len(paths) + i for i in range(len(paths))],
        last_preserved_timestamp=now - len(paths) - 1)


def newest_with_index(directory: str) -> str | None:
    """The newest ``ckpt-N`` with an ``.index`` file (not checked further)."""
    return next((path for path in candidates(directory)
                 if tf.io.gfile.exists(path + ".index")), None)


def set_aside(path: str, folder: str) -> str:
    """Moves ``path``'s files to ``DIR/FOLDER/``; the state file then names the newest left."""
    directory = os.path.dirname(path)
    target = os.path.join(directory, folder)
    os.makedirs(target, exist_ok=True)
    for name in glob.glob(path + ".index") + glob.glob(path + ".data-*"):
        os.replace(name, os.path.join(target, os.path.basename(name)))
    newest = newest_with_index(directory)
    if newest is None:
        if os.path.exists(os.path.join(directory, STATE_FILE)):
            os.remove(os.path.join(directory, STATE_FILE))
    else:
        write_state(directory, newest)
    logging.warning("Moved %s to %s.", path, target)
    return target


def remove_leftovers(directory: str) -> list[str]:
    """Removes the ``ckpt-N_temp/`` directories of interrupted saves; returns them."""
    removed = sorted(glob.glob(os.path.join(directory, f"{PREFIX}-*_temp")))
    for path in removed:
        logging.warning("Removing %s, left by an interrupted checkpoint save.", path)
        shutil.rmtree(path, ignore_errors=True)
    return removed


def remove_partial(directory: str, step: int) -> None:
    """Removes what a failed save of ``step`` wrote (its files are not in the state file)."""
    prefix = os.path.join(directory, f"{PREFIX}-{step}")
    for path in glob.glob(prefix + ".index") + glob.glob(prefix + ".data-*"):
        try:
            os.remove(path)
        except OSError:
            pass
    shutil.rmtree(prefix + "_temp", ignore_errors=True)


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the filesystem is full (or over quota)."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "Disk quota exceeded" in text
