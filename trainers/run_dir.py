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
instead of silently starting over or loading mismatched weights.  The data
configuration includes the data's identity (path and a cheap fingerprint,
``sources.Source.identity``): other data of the same kind and shape are
refused too, unless ``--allow_other_data`` (recorded in ``config.json``).
"""

from __future__ import annotations

import datetime
import json
import os
import uuid
from typing import Any

import numpy as np
import tensorflow as tf
from absl import logging

import tfnvp
# The format's reading half is the library's (tfnvp.load_run): one definition.
from tfnvp.io.runs import (CHECKPOINT_DIR, CONFIG_FILE, build_model, checkpoint_dir,
                           discarded_quietly_on_failure, read_config, restore_polyak_averages)
# The architectures by name, and a model's stored specification: one dispatch.
from tfnvp.models.architectures import (ARCHITECTURE_KEY, ARCHITECTURES, architecture_of,
                                        spec_from_stored, stored_config)

__all__ = ["CONFIG_FILE", "CHECKPOINT_DIR", "ARCHITECTURES",
           "ARCHITECTURE_KEY", "DATA_CHANGES_KEY", "DATA_IDENTITY_KEYS", "ConfigMismatchError", "write_json_atomic", "read_config",
           "check_config", "write_or_check_config", "architecture_of", "model_config",
           "build_model", "latent_scale_index", "restore_run", "restore_model", "checkpoint_dir",
           "spec_from_stored", "stored_config",
           "model_checkpoint_object"]

class ConfigMismatchError(tfnvp.UsageError):
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


#: The ``"data"`` keys naming the data themselves (``sources.Source.identity``): a run may
#: change them only on purpose (``allow_other_data``, ``--allow_other_data``).
DATA_IDENTITY_KEYS = ("data_path", "data_fingerprint")
#: ``config.json``'s record of the data changes a run was allowed.
DATA_CHANGES_KEY = "data_changes"


def _differences(old: Any, new: Any, keys=None) -> Any:
    """``{key: (old, new)}`` for the differing ``keys`` (default: all) of two dicts."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return (old, new)
    keys = sorted(set(old) | set(new)) if keys is None else keys
    return {k: (old.get(k), new.get(k)) for k in keys if old.get(k) != new.get(k)}


def _refuse(output_dir: str, key: str, diff: Any, fix: str) -> None:
    raise ConfigMismatchError(
        f"{output_dir!r} holds a run with a different {key} configuration (stored vs. "
        f"requested: {diff}). {fix}Its checkpoints were left untouched.")


def check_config(output_dir: str, config: dict, allow_other_data: bool = False) -> bool:
    """Checks ``config`` against the run's ``config.json`` without writing anything.

    Returns False when there is no ``config.json`` yet; raises
    ``ConfigMismatchError`` when its ``"model"`` or ``"data"`` differ.  The
    data's identity (``DATA_IDENTITY_KEYS``: path and fingerprint) may differ
    with ``allow_other_data``; a ``config.json`` written before it was
    recorded is not checked for it.
    """
    path = os.path.join(output_dir, CONFIG_FILE)
    if not os.path.exists(path):
        return False
    stored = read_config(output_dir)
    old, new = _jsonable(stored.get("model")), _jsonable(config.get("model"))
    if old != new:
        _refuse(output_dir, "model", _differences(old, new),
                "Use another --output_dir, or the same flags as the original run; ")
    old, new = _jsonable(stored.get("data")), _jsonable(config.get("data"))
    if not (isinstance(old, dict) and isinstance(new, dict)):
        if old != new:
            _refuse(output_dir, "data", (old, new), "")
        return True
    kind = [k for k in sorted(set(old) | set(new)) if k not in DATA_IDENTITY_KEYS]
    if _differences(old, new, kind):
        _refuse(output_dir, "data", _differences(old, new, kind),
                "Use another --output_dir, or the same flags as the original run; ")
    recorded = [k for k in DATA_IDENTITY_KEYS if k in old]
    identity = _differences(old, new, recorded)
    if identity and not allow_other_data:
        _refuse(output_dir, "data", identity,
                "These are other data than the run was trained on. Pass the original "
                "--data_dir, or --allow_other_data to continue on these data on purpose "
                "(config.json records the change); ")
    return True


def write_or_check_config(output_dir: str, config: dict, allow_other_data: bool = False) -> None:
    """Writes ``config`` for a new run; for an existing run, checks it matches.

    ``config`` has the keys ``"model"`` (``model_config(model)``) and
    ``"data"`` (at least ``image_shape`` and ``dataset``; ``DATA_IDENTITY_KEYS``).
    Anything else (e.g. ``"flags"``) is informational and may change between
    restarts.  An allowed change of the data (``allow_other_data``) rewrites
    ``config.json`` with the new ``"data"`` and ``"input"`` and appends
    ``{"from", "to", "after_checkpoint", "time"}`` to its ``DATA_CHANGES_KEY`` list.
    """
    if not check_config(output_dir, config, allow_other_data):
        write_json_atomic(os.path.join(output_dir, CONFIG_FILE), _jsonable(config))
        return
    stored = read_config(output_dir)
    old, new = stored.get("data", {}), _jsonable(config["data"])
    recorded = [k for k in DATA_IDENTITY_KEYS if k in old]
    if not _differences(old, new, recorded):
        return
    from trainers import checkpoints  # Late: checkpoints needs nothing of this module.

    newest = checkpoints.newest_with_index(checkpoint_dir(output_dir))
    change = {"from": {k: old.get(k) for k in DATA_IDENTITY_KEYS},
              "to": {k: new.get(k) for k in DATA_IDENTITY_KEYS},
              "after_checkpoint": newest and os.path.basename(newest),
              "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    logging.warning("--allow_other_data: %s continues on other data (%s); recorded in %s.",
                    output_dir, change, CONFIG_FILE)
    updated = {**stored, "data": new, "input": _jsonable(config.get("input", {})),
               DATA_CHANGES_KEY: stored.get(DATA_CHANGES_KEY, []) + [change]}
    write_json_atomic(os.path.join(output_dir, CONFIG_FILE), updated)


def _jsonable(value: Any) -> Any:
    """Round-trips through JSON so tuples and lists compare equal."""
    return json.loads(json.dumps(value))


def model_config(model: tfnvp.ImageFlowModel) -> dict:
    """What a run (``config.json``'s ``"model"``) and an export record of ``model``: its
    specification's stored form (``tfnvp.models.architectures.stored_config``)."""
    return stored_config(model.spec)


def latent_scale_index(stored_model_config: dict, image_shape) -> np.ndarray:
    """The latent layout (``ImageFlowSpec.latent_scale_index``) of a stored model config
    at ``image_shape``, without building the model (e.g. for a SavedModel's metadata)."""
    spec = spec_from_stored({**stored_model_config, "image_shape": list(image_shape)})
    return spec.latent_scale_index()


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
    averages if it holds them (``tfnvp.io.runs.restore_polyak_averages``) and
    ``averaged``, else the raw training weights.
    """
    return discarded_quietly_on_failure(
        lambda: _restore_run(output_dir, checkpoint_path, averaged, overrides))


def _restore_run(output_dir: str, checkpoint_path: str | None, averaged: bool,
                 overrides: dict) -> tuple[tfnvp.ImageFlowModel, str]:
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
