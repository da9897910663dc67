"""Reading a training run's directory back into a model: ``load_run``.

A run directory (written by ``tfnvp-train`` / ``trainers/train.py``)::

    RUN/config.json      {"model": <model.get_config()>, "data": ..., ...}
    RUN/checkpoints/     tf.train.CheckpointManager files: ckpt-N.index, ckpt-N.data-*,
                         and the state file "checkpoint" (Checkpoint(model=, optimizer=, ...))

``config.json``'s ``"model"`` is the model's specification in its stored form
(``tfnvp.models.architectures.stored_config``: ``get_config()``, plus the
architecture's name under ``ARCHITECTURE_KEY`` unless it is Real NVP); a key
written before its option existed takes the option's ``legacy`` value
(``spec_from_stored``).  This module is the one definition of the run
directory's format: the trainers write and resume runs through it
(``trainers/run_dir.py``, ``trainers/checkpoints.py``), and it reads no flags.

Which checkpoint: every ``ckpt-N`` that a file of ``checkpoints/`` or the state
file names is a candidate, newest first (a damaged state file does not hide
intact checkpoints).  A candidate is used when it restores completely: its
``.index`` and ``.data`` files exist and every variable of the live objects is
restored (``restore_error``).  Damaged newer checkpoints are skipped with their
reason; if none restores, ``CheckpointError`` says why for each.

Polyak averaging (Flow++, Glow; the trainer's ``--polyak_decay``): a run
trained with it checkpoints the exponential moving averages of
``model.trainable_variables`` under ``POLYAK_KEY`` (a ``PolyakAverages``, in
``trainable_variables`` order) and their decay under ``POLYAK_DECAY_KEY``.
``load_run`` gives the averaged weights of such a checkpoint
(``restore_polyak_averages``): what the run evaluated, sampled and exported.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import os
import re
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from tfnvp.errors import UsageError
from tfnvp.models import architectures
from tfnvp.models.image_flow import ImageFlowModel

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "CheckpointError", "POLYAK_DECAY_KEY", "POLYAK_KEY",
           "PolyakAverages", "Skipped", "build_model", "candidates", "checkpoint_dir",
           "checkpoint_polyak_decay", "checkpoint_step", "describe_weights",
           "discarded_quietly_on_failure", "first_line",
           "load_run", "read_config", "restore_error", "restore_newest_intact",
           "restore_polyak_averages"]

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINT_PREFIX = "ckpt"
STATE_FILE = "checkpoint"
_FILE = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)(?:\.index|\.data-\d+-of-\d+)$")
_IN_STATE = re.compile(rf"{CHECKPOINT_PREFIX}-(\d+)\b")

# The checkpoint's Polyak averages of the weights and their decay (absent: none).
POLYAK_KEY = "polyak_averages"
POLYAK_DECAY_KEY = "polyak_decay"

_logger = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """The run has checkpoints but none of them restores; nothing was changed."""


@dataclasses.dataclass(frozen=True)
class Skipped:
    """A checkpoint that did not restore, and why."""

    path: str
    reason: str


# --------------------------------------------------------------------- config
def checkpoint_dir(run_dir: str) -> str:
    return os.path.join(run_dir, CHECKPOINT_DIR)


def read_config(run_dir: str) -> dict:
    """The run's ``config.json``; ``FileNotFoundError`` naming the path if absent,
    ``ValueError`` if it is not JSON."""
    path = os.path.join(run_dir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: {run_dir!r} is not a tfnvp run directory.")
    try:
        with open(path) as f:
            config = json.load(f)
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError.
        raise UsageError(f"{path} is damaged ({error}): restore it from a backup (it records "
                         "the run's model and data configuration).") from error
    if not isinstance(config, dict) or not isinstance(config.get("model"), dict):
        raise UsageError(f"{path} has no \"model\" configuration: not a tfnvp run's config.")
    return config


def build_model(config: dict, **overrides) -> ImageFlowModel:
    """A fresh model of a run's config (its ``"model"`` specification, e.g. a ``RealNVP``
    or a ``Glow``; ``overrides`` replace options, ``ImageFlowSpec.with_options``)."""
    spec = architectures.spec_from_stored(config["model"])
    return architectures.build(spec.with_options(**overrides) if overrides else spec)


# ---------------------------------------------------------------- checkpoints
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
    return [os.path.join(directory, f"{CHECKPOINT_PREFIX}-{step}")
            for step in sorted(steps, reverse=True)]


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


def discarded_quietly_on_failure(build_and_restore: Callable[[], Any]) -> Any:
    """``build_and_restore()``; if it raises ``CheckpointError``, the model it built is
    collected before the error propagates, without TensorFlow's report of the failed restore.

    A restore that fails (e.g. a checkpoint of another architecture) leaves
    its pending values attached to the model; when the model is collected,
    TensorFlow logs a warning per value it left unread, about 200 lines for a
    small model, after the ``CheckpointError`` that already says why.  The
    error's traceback (whose frames hold the model) is dropped so that the
    model is collected here, with those warnings filtered out.
    """
    logger, quiet = tf.get_logger(), _UnreadValuesFilter()
    logger.addFilter(quiet)
    try:
        try:
            return build_and_restore()
        except CheckpointError as error:
            failure = error.with_traceback(None)
        gc.collect()
    finally:
        logger.removeFilter(quiet)
    raise failure


class _UnreadValuesFilter(logging.Filter):
    """Drops TensorFlow's warnings about the values a discarded checkpoint restore left unread."""

    PREFIXES = ("Detecting that an object or model or tf.train.Checkpoint is being deleted",
                "Value in checkpoint could not be found",
                "An attribute in the restored object could not be found")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.PREFIXES)


def restore_newest_intact(checkpoint: tf.train.Checkpoint, directory: str,
                          partial: bool = False) -> tuple[str | None, list[Skipped]]:
    """Restores the newest checkpoint of ``directory`` that restores completely.

    Returns ``(path, skipped)``: the newer candidates that did not restore,
    with their reasons; ``(None, [])`` when there is no checkpoint at all.
    Raises ``CheckpointError`` (its ``skipped`` attribute lists every
    candidate) if checkpoints exist and none restores.  ``partial``: see
    ``restore_error``.
    """
    skipped: list[Skipped] = []
    for path in candidates(directory):
        reason = restore_error(checkpoint, path, partial)
        if reason is None:
            return path, skipped
        skipped.append(Skipped(path, reason))
    if skipped:
        details = "; ".join(f"{os.path.basename(s.path)}: {s.reason}" for s in skipped)
        error = CheckpointError(
            f"No checkpoint in {directory!r} restores completely ({details}). Nothing was "
            "changed. Restore the files from a backup, or move the directory aside (or use "
            "another --output_dir) to start a new run.")
        error.skipped = skipped
        raise error
    return None, skipped


# ---------------------------------------------------------- Polyak averages
class PolyakAverages(tf.Module):
    """The checkpoint node of a model's Polyak averages: ``averages[i]`` is the
    exponential moving average of ``model.trainable_variables[i]``."""

    def __init__(self, averages):
        super().__init__(name=POLYAK_KEY)
        self.averages = list(averages)


def checkpoint_polyak_decay(path: str) -> float:
    """The decay of the Polyak averages a checkpoint holds (0.0: it holds none)."""
    reader = tf.train.load_checkpoint(path)
    key = f"{POLYAK_DECAY_KEY}/.ATTRIBUTES/VARIABLE_VALUE"
    return float(reader.get_tensor(key)) if reader.has_tensor(key) else 0.0


def describe_weights(polyak_decay: float) -> str:
    """Which weights an evaluation uses, for logs and reports."""
    if polyak_decay > 0:
        return f"Polyak-averaged weights (decay {polyak_decay:g})"
    return "training weights"


def restore_polyak_averages(model: ImageFlowModel, path: str) -> float:
    """Sets ``model``'s trainable weights to the Polyak averages of checkpoint ``path``.

    Returns their decay; 0.0 (``model`` unchanged) when the checkpoint holds
    none.  Raises ``CheckpointError`` when it records averages that do not
    restore into ``model``.
    """
    decay = checkpoint_polyak_decay(path)
    if not decay:
        return 0.0
    variables = model.trainable_variables
    averages = PolyakAverages([tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False)
                               for v in variables])
    reason = restore_error(tf.train.Checkpoint(**{POLYAK_KEY: averages}), path, partial=True)
    if reason is not None:
        raise CheckpointError(f"Checkpoint {path!r} records Polyak averaging (decay {decay:g}) "
                              f"but its averages do not restore ({reason}).")
    for variable, average in zip(variables, averages.averages):
        variable.assign(average)
    return decay


# ------------------------------------------------------------------- load_run
def _checkpoint_path(run_dir: str, checkpoint: str | int) -> str:
    """A checkpoint given as a step, a name (``"ckpt-1000"``) or a path prefix."""
    if isinstance(checkpoint, int) and not isinstance(checkpoint, bool):
        return os.path.join(checkpoint_dir(run_dir), f"{CHECKPOINT_PREFIX}-{checkpoint}")
    checkpoint = os.fspath(checkpoint)
    if not tf.io.gfile.exists(checkpoint + ".index") and not os.path.isabs(checkpoint):
        in_run = os.path.join(checkpoint_dir(run_dir), os.path.basename(checkpoint))
        if tf.io.gfile.exists(in_run + ".index"):
            return in_run
    return checkpoint


def load_run(run_dir: str | os.PathLike, checkpoint: str | int | None = None,
             averaged: bool = True) -> ImageFlowModel:
    """The trained model of a run directory, ready for evaluation.

    Rebuilds the run's model (``RealNVP`` or ``Glow``) from ``config.json``
    and restores its weights, including the batch-norm statistics and actnorm
    initializations, from the newest checkpoint that restores completely
    (damaged newer ones are skipped with a logged warning), or from
    ``checkpoint``: a step (``1000``), a name (``"ckpt-1000"``) or a path
    prefix (``"RUN/checkpoints/ckpt-1000"``).  A run trained with Polyak
    averaging (``config.json``'s ``training.polyak_decay``; the checkpoint
    records it) gives its averaged weights, the ones its evaluations, samples
    and exports used; ``averaged=False`` gives the raw training weights
    instead.  The model's methods default to
    evaluation mode (running statistics): ``model.log_prob(x)``,
    ``model.bits_per_dim(images)``, ``model.sample(16)``.

    Raises ``FileNotFoundError`` (no ``config.json``, no checkpoint, or no such
    ``checkpoint``), ``ValueError`` (a damaged ``config.json``) or
    ``CheckpointError`` (no checkpoint restores; the named one does not).

    Example::

        model = tfnvp.load_run("runs/cifar")
        images = model.sample(16, temperature=0.7)
    """
    run_dir = os.fspath(run_dir)
    return discarded_quietly_on_failure(lambda: _load_run(run_dir, checkpoint, averaged))


def _load_run(run_dir: str, checkpoint: str | int | None, averaged: bool) -> ImageFlowModel:
    model = build_model(read_config(run_dir))
    restorable = tf.train.Checkpoint(model=model)
    if checkpoint is None:
        path, skipped = restore_newest_intact(restorable, checkpoint_dir(run_dir), partial=True)
        for item in skipped:
            _logger.warning("Skipping checkpoint %s: %s", item.path, item.reason)
        if path is None:
            raise FileNotFoundError(f"No checkpoint in {checkpoint_dir(run_dir)!r}: the run has "
                                    "not saved one yet.")
        return _with_weights(model, path, averaged)
    path = _checkpoint_path(run_dir, checkpoint)
    if not tf.io.gfile.exists(path + ".index"):
        raise FileNotFoundError(f"No checkpoint {checkpoint!r} in {run_dir!r} (expected "
                                f"{path}.index; the run's checkpoints: "
                                f"{[os.path.basename(c) for c in candidates(checkpoint_dir(run_dir))]}).")
    reason = restore_error(restorable, path, partial=True)
    if reason is not None:
        raise CheckpointError(f"Checkpoint {path!r} does not restore ({reason}); leave "
                              "checkpoint unset to use the newest intact one.")
    return _with_weights(model, path, averaged)


def _with_weights(model: ImageFlowModel, path: str, averaged: bool) -> ImageFlowModel:
    """``model`` restored from ``path``, with its Polyak averages if ``averaged``."""
    weights = (describe_weights(restore_polyak_averages(model, path)) if averaged
               else "the raw training weights (averaged=False)")
    _logger.info("Loaded %s: %s.", path, weights)
    return model
