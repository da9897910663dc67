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

Every worker of a cluster runs the same candidate search over the same files,
so they all resume from the same checkpoint.
"""

from __future__ import annotations

import dataclasses
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

PREFIX = "ckpt"
STATE_FILE = "checkpoint"
_FILE = re.compile(rf"^{PREFIX}-(\d+)(?:\.index|\.data-\d+-of-\d+)$")
_IN_STATE = re.compile(rf"{PREFIX}-(\d+)\b")


class CheckpointError(RuntimeError):
    """The run has checkpoints but none of them restores; nothing was changed."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous one is still the newest."""


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A checkpoint that did not restore, and why."""

    path: str
    reason: str


def checkpoint_step(path: str) -> int:
    """``N`` of ``.../ckpt-N``."""
    return int(os.path.basename(path).rsplit("-", 1)[1])


def candidates(directory: str) -> list[str]:
    """Prefixes ``DIR/ckpt-N`` named by any file or by the state file, newest first."""
    steps: set[int] = set()
    for name in tf.io.gfile.listdir(directory) if tf.io.gfile.isdir(directory) else []:
        match = _FILE.match(name.rstrip("/"))
        if match:
            steps.add(int(match.group(1)))
    state = os.path.join(directory, STATE_FILE)
    if tf.io.gfile.exists(state):
        try:
            with tf.io.gfile.GFile(state, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            steps.update(int(m) for m in _IN_STATE.findall(text))
        except (OSError, tf.errors.OpError):
            pass  # An unreadable state file names nothing; the files still do.
    return [os.path.join(directory, f"{PREFIX}-{step}") for step in sorted(steps, reverse=True)]


def first_line(error: BaseException) -> str:
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return f"{type(error).__name__}: {message.strip().splitlines()[0]}"


def restore_error(checkpoint: tf.train.Checkpoint, path: str, partial: bool = False
                  ) -> str | None:
    """Why ``path`` does not restore completely into ``checkpoint`` (None if it does).

    ``partial``: the checkpoint may hold more than ``checkpoint`` (e.g. the
    optimizer when only the model is restored); every live variable must be.
    """
    if not tf.io.gfile.exists(path + ".index"):
        return "its .index file is missing"
    if not tf.io.gfile.glob(path + ".data-*"):
        return "its .data file is missing"
    try:
        status = checkpoint.restore(path)
        if partial:
            status.expect_partial().assert_existing_objects_matched()
        else:
            status.assert_consumed()
    except Exception as error:  # noqa: BLE001 - damaged files fail in many ways (OpError,
        return first_line(error)  # IndexError "Read less bytes", DecodeError, AssertionError)
    return None


def restore_newest_intact(checkpoint: tf.train.Checkpoint, directory: str,
                          partial: bool = False) -> tuple[str | None, list[Skipped]]:
    """Restores the newest checkpoint of ``directory`` that restores completely.

    Returns ``(path, skipped)``; ``(None, [])`` when there is no checkpoint at
    all.  Raises ``CheckpointError`` if checkpoints exist and none restores.
    ``partial``: see ``restore_error``.
    """
    skipped: list[Skipped] = []
    for path in candidates(directory):
        reason = restore_error(checkpoint, path, partial)
        if reason is None:
            if skipped:
                logging.warning("Using %s, the newest checkpoint that restores completely "
                                "(%d newer one(s) skipped and left in place).",
                                path, len(skipped))
            return path, skipped
        logging.warning("Skipping checkpoint %s: %s", path, reason)
        skipped.append(Skipped(path, reason))
    if skipped:
        details = "; ".join(f"{os.path.basename(s.path)}: {s.reason}" for s in skipped)
        raise CheckpointError(
            f"No checkpoint in {directory!r} restores completely ({details}). Nothing was "
            "changed. Restore the files from a backup, or move the directory aside (or use "
            "another --output_dir) to start a new run.")
    return None, skipped


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
