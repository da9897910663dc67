"""The layout of a training run's output directory, shared by every command.

::

    RUN/config.json        model and data configuration (written once, atomically)
    RUN/checkpoints/       tf.train.CheckpointManager: Checkpoint(model=, optimizer=, step=, rng=,
                           recalibration_batches=[, polyak_averages=, polyak_decay=])
    RUN/samples/           PNG grids of samples, one per evaluation (step_XXXXXXXX.png)
    RUN/tensorboard/       TensorBoard summaries (train/, eval/)
    RUN/eval.json          result of --mode=eval
    RUN/saved_model/N/     result of --mode=export (version N: the checkpoint's step)

A run started again with the same ``--output_dir`` resumes; one whose model or
data configuration differs from ``config.json`` is refused with an error
instead of silently starting over or loading mismatched weights.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import numpy as np
import tensorflow as tf

import tfnvp
# The format's reading half is the library's (tfnvp.load_run): one definition.
from tfnvp.runs import (ARCHITECTURE_KEY, ARCHITECTURES, CHECKPOINT_DIR, CONFIG_FILE,
                        LEGACY_MODEL_DEFAULTS, build_model, checkpoint_dir, read_config,
                        restore_polyak_averages)
from tfnvp.runs import split_architecture as _split_architecture

__all__ = ["CONFIG_FILE", "CHECKPOINT_DIR", "LEGACY_MODEL_DEFAULTS", "ARCHITECTURES",
           "ARCHITECTURE_KEY", "ConfigMismatchError", "write_json_atomic", "read_config",
           "check_config", "write_or_check_config", "architecture_of", "model_config",
           "build_model", "latent_scale_index", "restore_run", "restore_model", "checkpoint_dir",
           "model_checkpoint_object"]

class ConfigMismatchError(ValueError):
    """The run directory belongs to another architecture or dataset."""


def write_json_atomic(path: str, payload: Any) -> None:
    """Writes JSON via a temporary file and ``os.replace``: never half-written.

    The file gets the permissions of any new file (``0o666`` less the umask), so that
    other tools and users of a shared run directory can read it.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f, indent=2, sort_keys=True)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_config(output_dir: str, config: dict) -> bool:
    """Checks ``config`` against the run's ``config.json`` without writing anything.

    Returns False when there is no ``config.json`` yet; raises
    ``ConfigMismatchError`` when its ``"model"`` or ``"data"`` differ.
    """
    path = os.path.join(output_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return False
    stored = read_config(output_dir)
    for key in ("model", "data"):
        old, new = _jsonable(stored.get(key)), _jsonable(config.get(key))
        if old != new:
            diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
                    if old.get(k) != new.get(k)} if isinstance(old, dict) and isinstance(new, dict) else (old, new)
            raise ConfigMismatchError(
                f"{output_dir!r} holds a run with a different {key} configuration "
                f"(stored vs. requested: {diff}). Use another --output_dir, or the same flags "
                "as the original run; its checkpoints were left untouched.")
    return True


def write_or_check_config(output_dir: str, config: dict) -> None:
    """Writes ``config`` for a new run; for an existing run, checks it matches.

    ``config`` has the keys ``"model"`` (``model_config(model)``) and
    ``"data"`` (at least ``image_shape`` and ``dataset``).  Anything else
    (e.g. ``"flags"``) is informational and may change between restarts.
    """
    if not check_config(output_dir, config):
        write_json_atomic(os.path.join(output_dir, CONFIG_FILE), _jsonable(config))


def _jsonable(value: Any) -> Any:
    """Round-trips through JSON so tuples and lists compare equal."""
    return json.loads(json.dumps(value))


def architecture_of(model: tfnvp.ImageFlowModel) -> str:
    """The ``ARCHITECTURES`` name of ``model``."""
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise TypeError(f"No architecture name for {type(model).__name__}; known: "
                    f"{sorted(ARCHITECTURES)}.")


def model_config(model: tfnvp.ImageFlowModel) -> dict:
    """What a run (``config.json``'s ``"model"``) and an export record of ``model``:
    ``model.get_config()``, plus ``ARCHITECTURE_KEY`` unless it is a ``RealNVP``."""
    config = model.get_config()
    name = architecture_of(model)
    if name != "realnvp":
        config[ARCHITECTURE_KEY] = name
    return config


def latent_scale_index(stored_model_config: dict, image_shape) -> np.ndarray:
    """The latent layout (``tfnvp.latent_scale_index``) of a stored model config, without
    building the model (e.g. for a SavedModel's metadata)."""
    name, arguments = _split_architecture(stored_model_config)
    if name == "glow":
        return tfnvp.glow_latent_scale_index(image_shape, int(arguments["num_scales"]))
    return tfnvp.latent_scale_index(image_shape, int(arguments["num_scales"]),
                                    arguments["factor_out"])


def model_checkpoint_object(model: tfnvp.ImageFlowModel) -> tfnvp.ImageFlowModel:
    """What checkpoints store under ``model``: the model itself, every weight checked.

    ``tf.train.Checkpoint`` only saves what it reaches through tracked
    attributes; Keras 3 layer lists are invisible to it unless the model tracks
    them by name (it does).  A model whose weights it cannot all reach would
    save and restore nothing, silently, so that is refused here.
    """
    reachable = {id(obj) for obj in tf.train.TrackableView(model).descendants()}
    missing = [w.path for w in model.weights if id(w) not in reachable]
    if missing:
        raise RuntimeError(f"tf.train.Checkpoint cannot reach {len(missing)} of the model's "
                           f"{len(model.weights)} weights (e.g. {missing[:3]}): they would not "
                           "be checkpointed.")
    return model


def restore_run(output_dir: str, checkpoint_path: str | None = None, averaged: bool = True,
                **overrides) -> tuple[tfnvp.ImageFlowModel, str]:
    """The model of a run and the checkpoint its weights come from.

    ``checkpoint_path`` (e.g. ``--checkpoint``) must exist and restore; without
    it, the newest checkpoint whose model weights all restore is used, skipping
    damaged newer ones with a logged reason (``checkpoints.restore_newest_intact``,
    as a resumed training run does).  The weights are the checkpoint's Polyak
    averages if it holds them (``tfnvp.runs.restore_polyak_averages``) and
    ``averaged``, else the raw training weights.
    """
    from trainers import checkpoints  # Late: checkpoints needs nothing of this module.

    model = build_model(read_config(output_dir), **overrides)
    checkpoint = tf.train.Checkpoint(model=model_checkpoint_object(model))
    if checkpoint_path is None:
        path, _ = checkpoints.restore_newest_intact(checkpoint, checkpoint_dir(output_dir),
                                                    partial=True)
        if path is None:
            raise FileNotFoundError(f"No checkpoint in {checkpoint_dir(output_dir)!r}: train "
                                    "first (--mode=train).")
        checkpoint_path = path
    else:
        if not tf.io.gfile.exists(checkpoint_path + ".index"):
            raise FileNotFoundError(
                f"--checkpoint={checkpoint_path!r}: no such checkpoint (expected "
                f"{checkpoint_path}.index, e.g. {checkpoint_dir(output_dir)}/ckpt-1000).")
        reason = checkpoints.restore_error(checkpoint, checkpoint_path, partial=True)
        if reason is not None:
            raise checkpoints.CheckpointError(
                f"--checkpoint={checkpoint_path!r} does not restore ({reason}); leave "
                "--checkpoint unset to use the newest intact checkpoint.")
    if averaged:
        restore_polyak_averages(model, checkpoint_path)
    return model, checkpoint_path


def restore_model(output_dir: str, checkpoint_path: str | None = None, averaged: bool = True,
                  **overrides) -> tfnvp.ImageFlowModel:
    """The model of a run with the weights of its newest intact (or the given) checkpoint
    (its Polyak averages if it holds them and ``averaged``)."""
    return restore_run(output_dir, checkpoint_path, averaged, **overrides)[0]
