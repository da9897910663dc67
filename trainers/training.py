"""The training loop of the image flows (Real NVP, Glow): model, checkpoints, resumption,
summaries and evaluations.

``train(config, spec, data_config, strategy)`` trains the model of ``spec`` (a
``tfnvp.RealNVPSpec`` or ``tfnvp.GlowSpec``) ``config.train_steps`` steps into
``config.output_dir`` (layout: ``trainers/run_dir.py``):

* **Resumption.** A run directory with checkpoints is resumed from its latest
  one: model, optimizer slots, step and the data-order RNG are restored and
  training continues at the saved step.  ``config.json`` pins the architecture
  and the dataset's name and image shape; a different one is refused before
  any file is touched.
* **Checkpoints** every ``checkpoint_every`` steps and at the end, through a
  ``tf.train.CheckpointManager`` (the last ``keep_checkpoints`` kept).
  TensorFlow writes a checkpoint's files first and then replaces the small
  ``checkpoint`` index, so a process killed mid-save leaves the previous
  checkpoint the latest one.  Weights are checked to be finite before every
  save; a non-finite model is never saved.  A restart resumes from the newest
  checkpoint that restores completely (``trainers/checkpoints.py``); a failed
  save leaves no partial files.
* **Faults** (docs/training.md, "Failure and recovery"): SIGTERM/SIGINT checkpoint the
  current step and stop (``trainers/preemption.py``); ``max_consecutive_skipped``
  skipped updates in a row stop a diverged run, and no checkpoint is written
  while updates are being skipped (``trainers/divergence.py``).
* **Data order.** Each (re)start draws the input pipeline's seed from the
  checkpointed ``tf.random.Generator``: a fresh start is a function of
  ``--seed``, a restart from a given checkpoint always sees the same batches,
  and a resumed run does not replay the first run's batches.
* **Batch-norm statistics.** Before every evaluation (and so before the
  sample grid and the final checkpoint) every worker recalibrates them over
  ``recalibration_batches`` fixed training batches (``FlowModel.recalibrate``;
  0 turns it off: the debiased running averages are used); a checkpoint
  saved at that step holds them and records it (``recalibration_batches``).
  Training goes on from the recalibrated values (they are the better
  estimate; the counter weighs them as that many updates), which in the
  default mode only evaluation uses; so does a resumed run.
* **Polyak averaging** (``polyak_decay > 0``, ``trainers/polyak.py``): the
  optimizer keeps exponential moving averages of the weights, checkpointed
  (a resumed run continues them); the recalibration and the evaluation
  swap them in and the raw weights back, so the recalibrated statistics (and
  the checkpoint's) belong to the averaged weights. ``polyak_decay`` can
  change between restarts, but not from or to 0.
* **What the user sees** every ``log_every`` steps: step/total, loss in nats,
  training bits/dim, gradient norm, images/s and ETA; TensorBoard summaries in
  ``RUN/tensorboard/{train,eval}``; at every evaluation the held-out bits/dim
  and a PNG grid of samples ``RUN/samples/step_XXXXXXXX.png``.
* **Class-conditional** (a specification with ``num_classes``, ``--conditional``): the model has
  ``num_classes`` = the dataset's number of classes (recorded in
  ``config.json``'s model, so eval/export/visualize rebuild it), trains on
  ``-log p(x | y)`` with the dataset's labels, and its sample grids have one
  row per class.
* **Multi-worker.** Every worker trains and saves (non-chief workers save to a
  temporary directory that is deleted, as ``tf.distribute`` requires); only the
  chief writes summaries, samples, evaluations and the real checkpoints.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

import tfnvp
from tfnvp.errors import UsageError
from tfnvp.models import architectures

from trainers import checkpoints as checkpoints_lib
from trainers import data
from trainers import divergence
from trainers import evaluation
from trainers import polyak
from trainers import preemption
from trainers import process_exit
from trainers import run_dir
from trainers import steps as steps_lib
from trainers import strategy as strategy_lib
from trainers import summaries

__all__ = ["TrainConfig", "TrainingError", "MIXED_PRECISION", "train", "build_model",
           "run_config", "weights_fingerprint"]

MIXED_PRECISION = {"none": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
TENSORBOARD_DIR = "tensorboard"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the weights stopped being finite)."""


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training options: everything ``train`` needs besides the model's specification
    and the data (see ``trainers/train.py``'s flags)."""

    output_dir: str
    train_steps: int
    learning_rate: float = 1e-3
    optimizer: str = "adam"  # steps_lib.OPTIMIZERS; a run keeps its optimizer (_check_optimizer).
    adamax_beta2: float = 0.999  # GlowAdamax's beta_2 (the release: 1 - 1 / steps per epoch).
    warmup_steps: int = 0  # Linear learning-rate warm-up (steps_lib.make_optimizer).
    polyak_decay: float = 0.0  # Polyak averaging of the weights (trainers/polyak.py); 0: off.
    l2: float = 5e-5
    clip_grad_norm: float | None = None
    mixed_precision: str = "none"
    jit_compile: bool = False
    seed: int = 0
    eval_every: int = 1000
    checkpoint_every: int = 1000
    summary_every: int = 100
    log_every: int = 100
    num_sample_images: int = 64
    temperature: float = 1.0
    max_consecutive_skipped: int = 20
    recalibration_batches: int = 20
    keep_checkpoints: int = 3
    allow_other_data: bool = False  # Resume on data of another identity (run_dir.check_config).

    def __post_init__(self) -> None:
        if not 0.0 <= self.polyak_decay < 1.0:
            raise UsageError(f"polyak_decay must be in [0, 1) (0: no Polyak averaging), "
                             f"got {self.polyak_decay}.")
        if self.optimizer not in steps_lib.OPTIMIZERS:
            raise UsageError(f"optimizer must be one of {list(steps_lib.OPTIMIZERS)}, "
                             f"got {self.optimizer!r}.")
        if not 0.0 < self.adamax_beta2 < 1.0:
            raise UsageError(f"adamax_beta2 must be in (0, 1) (the release: 1 - 1 / steps per "
                             f"epoch), got {self.adamax_beta2}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise UsageError(f"mixed_precision must be one of {sorted(MIXED_PRECISION)}, "
                             f"got {self.mixed_precision!r}.")


#: The option of a specification that follows the number of replicas, not the architecture.
_SYNCHRONIZED = "synchronized_batch_norm"


def build_model(spec: tfnvp.ImageFlowSpec, replicas: int = 1) -> tfnvp.ImageFlowModel:
    """The model of ``spec`` (``tfnvp.models.architectures.build``); with several replicas,
    a Real NVP's batch-norm statistics are synchronized across them (Glow has none)."""
    if replicas > 1 and _SYNCHRONIZED in spec.options():
        spec = spec.with_options(**{_SYNCHRONIZED: True})
    return architectures.build(spec)


def run_config(model: tfnvp.ImageFlowModel, data_config: data.DataConfig,
               config: TrainConfig) -> dict:
    """``config.json``: what a resumed run must share (model, data: its kind, image shape and
    identity, ``data.identity``) plus informational flags.

    The model is its specification's stored form (``run_dir.stored_config``;
    Glow's names its architecture).  Real NVP's batch-norm synchronization
    follows the number of replicas, not the architecture, so it is stored as
    ``False``: a run may resume on another number of devices.
    """
    spec = model.spec
    if _SYNCHRONIZED in spec.options():
        spec = spec.with_options(**{_SYNCHRONIZED: False})
    return dict(
        model=run_dir.stored_config(spec),
        data=dict(dataset=data_config.dataset, image_shape=list(model.image_shape),
                  **data.identity(data_config)),
        training={k: v for k, v in dataclasses.asdict(config).items() if k != "output_dir"},
        input={k: v for k, v in dataclasses.asdict(data_config).items() if k != "seed"},
    )


def weights_fingerprint(model: keras.Model) -> str:
    """SHA-256 (16 hex digits) of the values of ``model.weights``, in order.

    Paths are left out: they carry process-global name counters.
    """
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight.value))
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def _check_polyak(output_dir: str, polyak_decay: float) -> None:
    """Refuses to turn Polyak averaging on or off in an existing run (its checkpoints
    hold the averages, or none): the decay itself may change."""
    if not os.path.exists(os.path.join(output_dir, run_dir.CONFIG_FILE)):
        return
    stored = float(run_dir.read_config(output_dir).get("training", {}).get("polyak_decay", 0.0))
    if (stored > 0) != (polyak_decay > 0):
        raise run_dir.ConfigMismatchError(
            f"{output_dir!r} holds a run trained with --polyak_decay={stored:g} "
            f"({'with' if stored > 0 else 'without'} Polyak averaging); --polyak_decay="
            f"{polyak_decay:g} cannot turn it {'off' if stored > 0 else 'on'} when resuming. "
            f"Pass --polyak_decay={stored:g} (any value {'in (0, 1)' if stored > 0 else 'of 0'} "
            "works), or use another --output_dir; the run was left untouched.")


def _check_optimizer(output_dir: str, optimizer: str) -> None:
    """Refuses to resume a run with another ``--optimizer`` than its checkpoints' (their
    slots are that optimizer's); a run stored before the flag existed trained with Adam."""
    if not os.path.exists(os.path.join(output_dir, run_dir.CONFIG_FILE)):
        return
    stored = run_dir.read_config(output_dir).get("training", {}).get("optimizer", "adam")
    if stored != optimizer:
        raise run_dir.ConfigMismatchError(
            f"{output_dir!r} holds a run trained with --optimizer={stored}; --optimizer="
            f"{optimizer} cannot resume it (its checkpoints hold {stored}'s moments). Pass "
            f"--optimizer={stored}, or use another --output_dir; the run was left untouched.")


def _nonfinite(variables) -> list[str]:
    bad = []
    for variable in variables:
        value = variable.value if isinstance(variable, keras.Variable) else variable
        value = np.asarray(value)
        if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
            bad.append(getattr(variable, "path", None) or variable.name)
    return bad


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return str(datetime.timedelta(seconds=int(round(seconds))))


class _Checkpointer:
    """Saves and restores the run's state; non-chief workers save to a scratch directory.

    Restores the newest checkpoint that restores completely and repairs the
    state file (``trainers/checkpoints.py``); a save that fails removes its
    partial files and leaves the previous checkpoint the newest.
    """

    def __init__(self, output_dir: str, checkpoint: tf.train.Checkpoint, chief: bool, task: int,
                 keep: int = 3):
        self.directory = run_dir.checkpoint_dir(output_dir)
        self.chief = chief
        self.write_dir = (self.directory if chief
                          else os.path.join(output_dir, f".worker_{task}_scratch", "checkpoints"))
        self.checkpoint = checkpoint
        self.keep = keep
        self.manager: tf.train.CheckpointManager | None = None
        self.latest: str | None = None
        self.saved_step: int | None = None

    def restore_latest(self) -> str | None:
        latest, skipped = checkpoints_lib.restore_newest_intact(self.checkpoint, self.directory)
        if self.chief:
            checkpoints_lib.remove_leftovers(self.directory)
            if latest is not None and (skipped or not checkpoints_lib.state_names(
                    self.directory, latest)):
                checkpoints_lib.write_state(self.directory, latest)
        self.manager = tf.train.CheckpointManager(self.checkpoint, self.write_dir,
                                                  max_to_keep=self.keep,
                                                  checkpoint_name=checkpoints_lib.PREFIX)
        self.latest = latest
        return latest

    def set_aside(self, step: int, folder: str) -> str | None:
        """Moves the checkpoint of ``step`` (if any) to ``checkpoints/FOLDER/`` (chief only)."""
        if not self.chief or self.saved_step != step or self.latest is None:
            return None
        moved = checkpoints_lib.set_aside(self.latest, folder)
        self.latest = checkpoints_lib.newest_with_index(self.directory)
        return moved

    def save(self, step: int, variables, step_var: tf.Variable) -> str | None:
        """Saves the state at ``step`` unless a variable is not finite (then raises)."""
        bad = _nonfinite(variables)
        if bad:
            raise TrainingError(
                f"Step {step}: {len(bad)} variables are not finite (e.g. {bad[:3]}); not saving. "
                f"The last good checkpoint in {self.directory!r} is kept.")
        step_var.assign(step)
        try:
            path = self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as error:
            checkpoints_lib.remove_partial(self.write_dir, step)
            reason = ("the disk is full" if checkpoints_lib.is_disk_full(error)
                      else checkpoints_lib.first_line(error))
            kept = (f"the newest checkpoint is still {self.latest}" if self.latest
                    else "no checkpoint was written yet")
            raise checkpoints_lib.CheckpointWriteError(
                f"Could not write the checkpoint of step {step} to {self.write_dir!r}: "
                f"{reason}. Its partial files were removed and {kept}; free space (or fix the "
                "error) and run the same command again to resume.") from error
        self.saved_step = step
        if not self.chief:
            shutil.rmtree(os.path.dirname(self.write_dir), ignore_errors=True)
            return None
        self.latest = path
        logging.info("Saved checkpoint %s.", path)
        return path


class _Progress:
    """Averages the training statistics between two progress lines.

    Throughput and ETA count the training steps only: the first step of a
    session (tracing and compilation) and the time spent evaluating, saving and
    writing summaries are left out.
    """

    def __init__(self, total_steps: int, global_batch_size: int):
        self.total = total_steps
        self.batch = global_batch_size
        self.rows: list[dict] = []
        self.timed_steps, self.seconds = 0, 0.0
        self._since = None

    def add(self, stats: dict, timed: bool = True) -> None:
        self.rows.append(stats)
        now = time.perf_counter()
        if timed and self._since is not None:
            self.timed_steps += 1
            self.seconds += now - self._since
        self._since = now

    def pause(self) -> None:
        """Time from here to the next step's start is not training time."""
        self._since = None

    def resume(self) -> None:
        self._since = time.perf_counter()

    def flush(self, step: int) -> dict:
        mean = {key: float(np.mean([float(row[key]) for row in self.rows]))
                for key in ("nll", "bits_per_dim", "grad_norm", "l2_penalty")}
        seconds_per_step = self.seconds / self.timed_steps if self.timed_steps else float("nan")
        mean["images_per_second"] = self.batch / seconds_per_step
        mean["seconds_per_step"] = seconds_per_step
        speed = (f"{mean['images_per_second']:.1f} images/s in training steps (evaluation, "
                 "summaries, checkpoints excluded)" if self.timed_steps else
                 "images/s from the second step on (the first traces and compiles)")
        logging.info(
            "step %d/%d (%.0f%%) | loss %.2f nats | %.4f bits/dim | grad norm %.3g | %s | ETA %s",
            step, self.total, 100.0 * step / self.total, mean["nll"],
            mean["bits_per_dim"], mean["grad_norm"], speed,
            _format_duration((self.total - step) * seconds_per_step))
        self.rows, self.timed_steps, self.seconds = [], 0, 0.0
        return mean


def train(config: TrainConfig, spec: tfnvp.ImageFlowSpec, data_config: data.DataConfig,
          strategy: tf.distribute.Strategy) -> dict:
    """Trains (or resumes) a run of the model ``spec``; returns its final step, statistics
    and evaluation.

    The input iterator stays held (``process_exit.hold``) after the return: the command
    ends without freeing it, and an in-process caller frees it with
    ``process_exit.release()`` (``trainers.train.run`` does)."""
    chief = strategy_lib.is_chief(strategy)
    _, task = strategy_lib.task_id(strategy)
    replicas = strategy.num_replicas_in_sync
    if data_config.batch_size % replicas:
        raise UsageError(f"--batch_size={data_config.batch_size} (global) must be divisible by "
                         f"the number of replicas, {replicas}.")
    data_config = dataclasses.replace(data_config, labels=spec.num_classes is not None)
    keras.utils.set_random_seed(config.seed)
    with strategy.scope():
        model = build_model(spec, replicas)
    cfg = run_config(model, data_config, config)
    _check_polyak(config.output_dir, config.polyak_decay)
    _check_optimizer(config.output_dir, config.optimizer)
    if chief:
        run_dir.write_or_check_config(config.output_dir, cfg, config.allow_other_data)
    else:  # Only the chief writes config.json; the others check it if it is there.
        run_dir.check_config(config.output_dir, cfg, config.allow_other_data)

    with strategy.scope():
        optimizer = steps_lib.make_optimizer(config.learning_rate, config.mixed_precision,
                                             config.warmup_steps, config.polyak_decay,
                                             config.optimizer, config.adamax_beta2)
        optimizer.build(model.trainable_variables)
    averaged_weights = polyak.AveragedWeights(model.trainable_variables, optimizer, strategy,
                                              config.polyak_decay)
    averaged_weights.initialize()  # A resumed run restores its averages.
    step_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
    recalibrated = tf.Variable(0, dtype=tf.int64, trainable=False, name="recalibrated")
    decay_var = tf.Variable(config.polyak_decay, dtype=tf.float64, trainable=False,
                            name="polyak_decay")
    rng = tf.random.Generator.from_seed(config.seed)

    checkpoint = tf.train.Checkpoint(model=run_dir.model_checkpoint_object(model),
                                     optimizer=optimizer, step=step_var, rng=rng,
                                     **{evaluation.RECALIBRATION_KEY: recalibrated},
                                     **polyak.checkpoint_objects(optimizer, decay_var))
    checkpointer = _Checkpointer(config.output_dir, checkpoint, chief, task,
                                 keep=config.keep_checkpoints)
    restored = checkpointer.restore_latest()
    decay_var.assign(config.polyak_decay)  # Checkpoints record the decay in use from here on.
    start_step = int(step_var.numpy())
    if restored:
        logging.info("Restored %s: resuming at step %d (weights %s%s).", restored, start_step,
                     weights_fingerprint(model),
                     ", and their Polyak averages" if averaged_weights.averages else "")
    else:
        logging.info("New run in %s (%d parameters, weights %s).", config.output_dir,
                     sum(int(np.prod(v.shape)) for v in model.trainable_variables),
                     weights_fingerprint(model))
    data_seed = int(rng.uniform_full_int([], tf.int64).numpy() % (2**31 - 1))
    train_data = dataclasses.replace(data_config, seed=data_seed)
    dataset = strategy.distribute_datasets_from_function(
        lambda ctx: data.make_train_dataset(train_data, ctx))
    iterator = iter(dataset)
    process_exit.hold(iterator)  # Freed when the command ends, if at all (process_exit).
    steps = steps_lib.TrainSteps(
        model, optimizer, strategy, iterator.element_spec, data_config.batch_size, l2=config.l2,
        clip_grad_norm=config.clip_grad_norm, jit_compile=config.jit_compile)

    outputs = _Outputs(config, data_config, model) if chief else None
    recalibrate = _Recalibration(config, data_config, model, strategy)
    result = dict(step=start_step, eval=None, stats=None)
    if start_step >= config.train_steps:
        logging.info("Step %d >= --train_steps=%d: nothing to train.", start_step, config.train_steps)
        return result

    logging.info("Training steps %d..%d, global batch %d on %d replica(s), data seed %d.",
                 start_step + 1, config.train_steps, data_config.batch_size, replicas, data_seed)
    progress = _Progress(config.train_steps, data_config.batch_size)
    began, trained, skipped = time.perf_counter(), 0, 0
    timed_steps, timed_seconds = 0, 0.0  # Over the session, for the final throughput.
    stats = None
    guard = divergence.SkippedUpdates(config.max_consecutive_skipped, steps.loss_scaled)
    checkpoint_due = False
    progress.resume()
    try:
        for step in range(start_step + 1, config.train_steps + 1):
            batch = next(iterator)
            stats = steps.train_step(batch)
            trained += 1
            if trained == 1:
                logging.info("First step (tracing and compilation included): %.1f s.",
                             time.perf_counter() - began)
            if not bool(stats["applied"]):
                skipped += 1
                if steps.loss_scaled:
                    logging.warning("Step %d: float16 gradients overflowed: update skipped and "
                                    "loss scale halved (%d skipped so far).", step, skipped)
                else:
                    logging.warning("Step %d: non-finite loss or gradients (loss %s, grad norm "
                                    "%s): update skipped (%d so far).", step,
                                    float(stats["nll"]), float(stats["grad_norm"]), skipped)
            if guard.update(step, bool(stats["applied"]), float(stats["nll"])):
                set_aside = checkpointer.set_aside(guard.suspect_step, "diverged")
                raise TrainingError(guard.message(step, checkpointer.latest, set_aside))
            progress.add(stats, timed=trained > 1)
            last = step == config.train_steps
            checkpoint_due = checkpoint_due or step % config.checkpoint_every == 0 or last
            save = functools.partial(checkpointer.save, step,
                                     model.weights + list(optimizer.variables), step_var)
            evaluation_due = step % config.eval_every == 0 or last
            evaluating = outputs is not None and evaluation_due
            recalibrated.assign(0)  # Until recalibrated at this step: running averages.
            periodic = [
                # Every worker recalibrates (the same fixed batches): the replicas stay identical.
                (evaluation_due and config.recalibration_batches > 0,
                 lambda: recalibrated.assign(recalibrate(averaged_weights))),
                (outputs is not None and (step % config.summary_every == 0 or last),
                 lambda: outputs.train_summaries(
                     step, stats, steps.diagnose(batch),
                     optimizer)),
                (checkpoint_due and guard.checkpoint_allowed, save),  # Postponed while skipping.
                (evaluating, lambda: result.update(eval=outputs.evaluate(
                    step, int(recalibrated.numpy()), averaged_weights))),
            ]
            if step % config.log_every == 0 or last:
                timed_steps += progress.timed_steps
                timed_seconds += progress.seconds
                window = progress.flush(step)
                if outputs:
                    outputs.scalars("train", step, dict(
                        images_per_second=window["images_per_second"],
                        skipped_updates=float(skipped)))
            if any(due for due, _ in periodic):
                progress.pause()
                for due, action in periodic:
                    if due:
                        action()
                progress.resume()
            checkpoint_due = checkpoint_due and checkpointer.saved_step != step
            stop = None if last else preemption.stop_requested(strategy)
            if stop is not None:
                if checkpointer.saved_step != step and guard.checkpoint_allowed:
                    save()
                raise preemption.Preempted(stop.signame, step, checkpointer.latest,
                                           saved=checkpointer.saved_step == step)
    finally:  # The event files are complete before the command ends (process_exit).
        if outputs is not None:
            outputs.close()
    if checkpoint_due:
        logging.warning("No final checkpoint: the last %d updates were skipped; the newest "
                        "checkpoint stays %s.", guard.consecutive, checkpointer.latest)
    elapsed = time.perf_counter() - began
    strategy_lib.barrier(strategy)
    step_rate = data_config.batch_size * timed_steps / timed_seconds if timed_seconds else float("nan")
    logging.info("Trained steps %d..%d in %s: %.1f images/s in training steps, %.1f overall "
                 "(compilation, evaluations and checkpoints included); %d updates skipped. "
                 "Final weights %s.", start_step + 1, config.train_steps, _format_duration(elapsed),
                 step_rate, trained * data_config.batch_size / max(elapsed, 1e-9), skipped,
                 weights_fingerprint(model))
    result.update(step=config.train_steps, stats={k: float(v) for k, v in stats.items()},
                  skipped=skipped, images_per_second=step_rate)
    return result


class _Recalibration:
    """Recalibrates the batch-norm statistics over the same fixed training batches each time."""

    def __init__(self, config: TrainConfig, data_config: data.DataConfig, model: tfnvp.RealNVP,
                 strategy: tf.distribute.Strategy):
        self.config, self.data_config, self.model, self.strategy = (
            config, data_config, model, strategy)
        self._dataset: tf.data.Dataset | None = None  # Built once: its cache is reused.

    def __call__(self, averaged_weights: polyak.AveragedWeights) -> int:
        """Recalibrates the statistics of the weights evaluations use (the Polyak averages,
        if any); returns the number of batches used."""
        if self._dataset is None:
            self._dataset = evaluation.recalibration_dataset(
                self.data_config, self.config.recalibration_batches, self.config.seed)
        with averaged_weights():
            return evaluation.recalibrate(self.model, self._dataset,
                                          self.config.recalibration_batches, self.strategy)


class _Outputs:
    """The chief's summaries, evaluations and sample grids."""

    def __init__(self, config: TrainConfig, data_config: data.DataConfig, model: tfnvp.RealNVP):
        self.config = config
        self.data_config = data_config
        self.model = model
        board = os.path.join(config.output_dir, TENSORBOARD_DIR)
        self.writers = {name: summaries.SummaryWriter(os.path.join(board, name))
                        for name in ("train", "eval")}
        self.evaluator = evaluation.Evaluator(model)
        self._eval_dataset: tf.data.Dataset | None = None  # Built once: its cache is reused.
        self.sampler = (evaluation.Sampler(model, config.num_sample_images, config.temperature,
                                           config.seed) if config.num_sample_images else None)

    def scalars(self, split: str, step: int, values: dict) -> None:
        self.writers[split].scalars(step, values)

    def train_summaries(self, step: int, stats: dict, diagnostics: dict, optimizer) -> None:
        values = dict(bits_per_dim=stats["bits_per_dim"], loss_nats=stats["nll"],
                      grad_norm=stats["grad_norm"], l2_penalty=stats["l2_penalty"],
                      learning_rate=float(keras.ops.convert_to_numpy(optimizer.learning_rate)))
        values.update({f"eval_mode/{k}": v for k, v in diagnostics.items()})
        self.scalars("train", step, values)

    def evaluate(self, step: int, recalibration_batches: int,
                 averaged_weights: polyak.AveragedWeights) -> dict:
        """Held-out bits/dim and samples of ``averaged_weights`` with the current statistics,
        as described by ``recalibration_batches`` (0: the running averages)."""
        if self._eval_dataset is None:
            self._eval_dataset = data.make_eval_dataset(self.data_config)
        with averaged_weights():
            result = self.evaluator.evaluate(self._eval_dataset)
            picture = path = None
            if self.sampler is not None:
                path, picture = self.sampler.save_grid(
                    evaluation.sample_grid_path(self.config.output_dir, step))
        statistics = evaluation.describe_statistics(self.model, recalibration_batches)
        logging.info("Evaluation at step %d (%s; batch-norm statistics: %s): %s.", step,
                     averaged_weights.description, statistics, result.summary())
        self.scalars("eval", step, dict(bits_per_dim=result.bits_per_dim,
                                        bits_per_dim_std_error=result.std_error,
                                        batch_norm_recalibration_batches=recalibration_batches))
        report = dict(dataclasses.asdict(result), batch_norm_statistics=statistics,
                      weights=averaged_weights.description)
        if path is not None:
            self.writers["eval"].image(step, f"samples_t{self.config.temperature:g}", picture)
            logging.info("Samples (temperature %g): %s", self.config.temperature, path)
            report["samples"] = path
        for writer in self.writers.values():
            writer.flush()
        return report

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
