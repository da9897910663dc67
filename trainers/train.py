r"""Train, evaluate or export Real NVP (Dinh et al., ICLR 2017) or Glow (Kingma & Dhariwal, 2018).

Run from the repository root::

    python trainers/train.py --flagfile=trainers/digits.flags --output_dir=/tmp/digits
    python trainers/train.py --flagfile=cifar.flags                  # paper, section 4.1: runs/cifar
    python trainers/train.py --flagfile=cifar.flags --mode=eval
    python trainers/train.py --flagfile=cifar.flags --mode=export

Installed (``pip install "tfnvp[train]"``), the same command is ``tfnvp-train``,
from any directory.  A ``--flagfile`` that does not exist relative to the working
directory is looked up in ``trainers/`` (installed: the shipped flagfiles).  ``--output_dir`` defaults to ``runs/<flagfile name>`` (else
``runs/<dataset>``); the first line printed names it.  Running again with the same
run directory resumes from the latest checkpoint.  TFDS datasets are downloaded and
prepared before the run directory is created (``trainers/tfds_prepare.py``).
``--train_steps`` has no default: every run says how long it trains (the paper-sized
flagfiles set long runs).  ``--model=realnvp|glow`` picks the architecture; every option
of its specification (``tfnvp.RealNVPSpec``, ``tfnvp.GlowSpec``) is a flag of the same name
(``trainers/model_flags.py``).  Its size flags (Real NVP: ``--num_scales``,
``--num_res_blocks``, ``--hidden_channels``; Glow: ``--num_scales``, ``--steps_per_scale``,
``--hidden_channels``) default to its paper's preset (``tfnvp.RealNVPSpec.cifar10()``, ...,
``tfnvp.GlowSpec.cifar10()``) for the paper's datasets and must be given for the others;
the other options default to the specification's defaults.  ``--conditional`` trains a
class-conditional model (``num_classes`` = the dataset's classes) on the dataset's labels;
``--dequantization=variational`` a model with a learned dequantizer (Flow++).  The
pipelines feed every model uint8 images with a noise seed per image, which its
dequantizer turns into dequantized ones.  eval and export rebuild the run's own model
(conditional or not, its dequantizer) from its ``config.json``.

Modes:
  train   train (or resume) into --output_dir; evaluates every --eval_every steps.
  eval    exact bits/dim of the latest checkpoint (or --checkpoint) over the whole
          held-out split (fixed dequantization noise); written to RUN/eval.json.
  export  SavedModel of the latest checkpoint (or --checkpoint) in RUN/saved_model/<version>/
          (TensorFlow Serving's layout; --export_version, default: the checkpoint's step).

Batch-norm statistics: training keeps debiased running averages; before every
evaluation, sample grid and the final checkpoint they are recalibrated over
--recalibration_batches training batches and checkpointed.  eval and export use
the checkpoint's statistics, recalibrating a checkpoint that was not.

Polyak averaging (--polyak_decay, trainers/polyak.py): evaluations, sample grids,
their recalibration, eval and export use the averaged weights; training the raw ones.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback

# TensorFlow's oneDNN CPU kernels.  TensorFlow turns them on by default only on some CPUs (not
# on AVX2-only ones); where it does not, its Eigen kernels train the paper model and run its
# log_prob ~1.4x slower and sample ~1.1x slower (docs/performance.md).  Read once, when
# TensorFlow loads: set TF_ENABLE_ONEDNN_OPTS=0 to keep Eigen's.  No effect on GPUs.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

if __name__ == "__main__" and not __package__:  # python trainers/train.py
    import checkout  # trainers/checkout.py, this script's sibling.

    checkout.require_own_checkout(__file__)

_TRAINERS_DIR = os.path.dirname(os.path.abspath(__file__))
_REPO_ROOT = os.path.dirname(_TRAINERS_DIR)

from absl import app, flags, logging  # noqa: E402

from trainers import console  # noqa: E402

console.start_tensorflow()  # Its C++ errors only, unless TF_CPP_MIN_LOG_LEVEL says otherwise.

from tfnvp import graph_optimization  # noqa: E402
from tfnvp.models.architectures import ARCHITECTURES  # noqa: E402

from trainers import launch  # noqa: E402
from trainers import model_flags  # noqa: E402
from trainers import process_exit  # noqa: E402
from trainers import strategy as strategy_lib  # noqa: E402

FLAGS = flags.FLAGS

# ----------------------------------------------------------------------------- flags
flags.DEFINE_enum("mode", "train", ["train", "eval", "export"], "What to do with --output_dir.")
flags.DEFINE_string("output_dir", None, "Run directory (config, checkpoints, samples, summaries); "
                    "default: runs/<--flagfile name>, else runs/<--dataset>.")
flags.DEFINE_string("dataset", None, "Dataset name (see trainers/sources/); for eval/export "
                    "defaults to the run's.")
flags.DEFINE_string("data_dir", None, "Data folder or file; TFDS data_dir for TFDS datasets. A "
                    "relative path missing from the working directory is tried from the repo root.")
flags.DEFINE_boolean("allow_other_data", False, "Resume a run on other data than it was "
                     "trained on (another --data_dir, or its files changed: config.json records "
                     "the data's path and fingerprint, and a mismatch is refused otherwise). "
                     "config.json records the change.")
flags.DEFINE_integer("channels", None, "Image channels (1-4). image_folder: convert every file to "
                     "this many (a warning says how many were converted); other datasets: must "
                     "be theirs. Unset: inferred, and every file must agree (else an error "
                     "names a file that does not). eval/export default to the run's.")
flags.DEFINE_integer("train_steps", None, "Total training steps (required for --mode=train; no "
                     "default so that no run silently trains for a toy number of steps).")
flags.DEFINE_integer("batch_size", 64, "GLOBAL batch size, split evenly across replicas.")
flags.DEFINE_integer("eval_batch_size", 256, "Evaluation batch size.")
flags.DEFINE_float("learning_rate", 1e-3, "The optimizer's learning rate (other Adam settings: "
                   "Keras defaults).")
flags.DEFINE_enum("optimizer", "adam", ["adam", "adamax"], "adam (Keras' Adam, as tfnvp.FusedAdam) "
                  "or adamax (the Adamax of Glow's release, its default: tfnvp.GlowAdamax, "
                  "beta_1 0.9, beta_2 --adamax_beta2, epsilon 1e-8). A run keeps the optimizer it "
                  "started with.")
flags.DEFINE_float("adamax_beta2", 0.999, "--optimizer=adamax: beta_2. The release's rule: 1 - 1 / "
                   "(training steps per epoch), e.g. 1 - 1/782 = 0.998721 for CIFAR-10's 50000 "
                   "images in batches of 64.")
flags.DEFINE_integer("warmup_steps", 0, "Linear learning-rate warm-up: update t uses "
                     "learning_rate * min(1, t / warmup_steps) (the Flow++ release: 2000); 0: none.",
                     lower_bound=0)
flags.DEFINE_float("polyak_decay", 0.0, "Polyak averaging: exponential moving averages of the "
                   "weights with this decay (Flow++: 0.999), checkpointed; evaluations, "
                   "sample grids, their batch-norm recalibration, eval and export use the "
                   "averages, training the raw weights. 0: off. A run cannot turn it on or off "
                   "when resuming.")
flags.DEFINE_float("l2", 5e-5, "L2 penalty coefficient on the conditioners' kernels (= their "
                   "weight-norm scales; paper: 5e-5), added to the loss.")
flags.DEFINE_float("clip_grad_norm", None, "Clip the global gradient norm to this (unset: no clipping).")
flags.DEFINE_enum("model", "realnvp", list(ARCHITECTURES), "Architecture: Real NVP "
                  "(tfnvp.RealNVP) or Glow (tfnvp.Glow: actnorm, 1x1 convolutions, Glow "
                  "couplings; no batch norm). eval/export use the run's.")
flags.DEFINE_boolean("conditional", False, "Class-conditional model p(x | y) (num_classes = the "
                     "dataset's classes) trained on the dataset's labels; its sample grids have "
                     "one row per class and its exports take labels. eval/export use the run's.")
# One flag per option of the models' specifications (tfnvp.RealNVPSpec, tfnvp.GlowSpec):
# --num_scales, --hidden_channels, --coupling, --attention, ... (trainers/model_flags.py).
model_flags.define_flags()
flags.DEFINE_integer("eval_every", 1000, "Evaluate (held-out bits/dim and a sample grid) every N steps.")
flags.DEFINE_integer("checkpoint_every", 1000, "Checkpoint every N steps (and at the end).")
flags.DEFINE_integer("summary_every", 100, "TensorBoard training summaries every N steps.")
flags.DEFINE_integer("log_every", 100, "Progress line every N steps.")
flags.DEFINE_enum("strategy", "auto", list(strategy_lib.STRATEGIES),
                  "auto: multi_worker if TF_CONFIG describes a cluster, else mirrored (all local "
                  "GPUs, else the CPU).")
flags.DEFINE_boolean("jit_compile", False, "XLA-compile the forward/backward pass (one replica only).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16", "float16"],
                  "Conditioner compute dtype (the flow, loss and log-dets stay float32); float16 "
                  "uses dynamic loss scaling.")
flags.DEFINE_integer("seed", 0, "Seed of the initialization, the data order and the sample grid.")
flags.DEFINE_integer("max_eval_examples", None, "Held-out examples for the periodic evaluations "
                     "during training (unset: all). --mode=eval always uses the whole split.")
flags.DEFINE_integer("num_sample_images", 64, "Samples in each grid (0: none).")
flags.DEFINE_float("temperature", 1.0, "Sampling temperature: z ~ N(0, T^2 I).")
flags.DEFINE_boolean("flip", None, "Random horizontal flips in training (unset: the paper's "
                     "choice for the dataset).")
# Batch-norm statistics and checkpoints (issue 9).
flags.DEFINE_integer("recalibration_batches", 20, "Recompute the batch-norm statistics over this "
                     "many fixed training batches before every evaluation, sample grid and the "
                     "final checkpoint (and in eval/export of a checkpoint that was not); 0: use "
                     "the debiased running averages. 20 batches of 64 take ~7 training steps' "
                     "time and estimate every statistic from 1,280 images.")
flags.DEFINE_integer("keep_checkpoints", 3, "Checkpoints kept in RUN/checkpoints.")
flags.DEFINE_string("checkpoint", None, "--mode=eval/export: this checkpoint (e.g. "
                    "RUN/checkpoints/ckpt-1000) instead of the latest.")
flags.DEFINE_integer("export_version", None, "--mode=export: writes RUN/saved_model/<version>/ "
                     "(TensorFlow Serving's layout); default: the checkpoint's training step.")
flags.register_validator("export_version", lambda v: v is None or v >= 0, message="must be >= 0.")
flags.register_validator("recalibration_batches", lambda v: v >= 0, message="must be >= 0.")
flags.register_validator("keep_checkpoints", lambda v: v >= 1, message="must be >= 1.")

# Failure and recovery (see docs/training.md, "Failure and recovery").
flags.DEFINE_integer("max_consecutive_skipped", 20, "Stop with an error (exit status 1) after this "
                     "many consecutive updates skipped for a non-finite loss or gradients: the "
                     "run diverged; its newest checkpoint stays the last good one.")
flags.DEFINE_boolean("verbose", False, "On an error, also print the Python traceback.")
flags.register_validator("max_consecutive_skipped", lambda v: v >= 1, message="must be >= 1.")

for _name in ("batch_size", "eval_batch_size", "eval_every", "checkpoint_every", "summary_every",
              "log_every"):
    flags.register_validator(_name, lambda v: v is not None and v >= 1, message="must be >= 1.")
for _name in ("train_steps", "max_eval_examples"):
    flags.register_validator(_name, lambda v: v is None or v >= 1, message="must be >= 1.")
flags.register_validator("channels", lambda v: v is None or 1 <= v <= 4,
                         message="must be 1, 2, 3 or 4 (leave it unset to infer it).")
flags.register_validator("polyak_decay", lambda v: 0.0 <= v < 1.0,
                         message="must be in [0, 1) (0: no Polyak averaging; Flow++: 0.999).")
flags.register_validator("num_sample_images", lambda v: v >= 0, message="must be >= 0.")
flags.register_validator("learning_rate", lambda v: v > 0, message="must be > 0.")
flags.register_validator("adamax_beta2", lambda v: 0.0 < v < 1.0,
                         message="must be in (0, 1) (the release: 1 - 1 / steps per epoch).")
flags.register_validator("l2", lambda v: v >= 0, message="must be >= 0.")
flags.register_validator("clip_grad_norm", lambda v: v is None or v > 0,
                         message="must be > 0 (leave it unset for no clipping).")
flags.register_validator("temperature", lambda v: v >= 0, message="must be >= 0.")
flags.register_multi_flags_validator(
    ["mode", "train_steps", "dataset"],
    lambda f: f["mode"] != "train" or (f["train_steps"] is not None and f["dataset"] is not None),
    message="--mode=train needs --dataset and --train_steps (e.g. from a --flagfile).")


# --help: every flag above, by group.
HELP_GROUPS = {
    "Data": ("dataset", "data_dir", "allow_other_data", "channels", "flip", "batch_size",
             "seed"),
    "Model": ("model", "conditional", *model_flags.flag_names()),
    "Training": ("train_steps", "learning_rate", "optimizer", "adamax_beta2", "warmup_steps",
                 "l2", "clip_grad_norm",
                 "polyak_decay", "mixed_precision", "jit_compile", "strategy",
                 "max_consecutive_skipped"),
    "Evaluation": ("eval_every", "eval_batch_size", "max_eval_examples",
                   "recalibration_batches", "num_sample_images", "temperature", "checkpoint"),
    "Output": ("mode", "output_dir", "checkpoint_every", "keep_checkpoints", "summary_every",
               "log_every", "export_version", "verbose"),
}


# ---------------------------------------------------------------------- helpers
def resolve_flagfiles(argv: list[str]) -> list[str]:
    """Rewrites ``--flagfile=NAME`` to ``trainers/NAME`` when NAME is not in the cwd.

    A flagfile found in neither place, or not a readable file, is a
    ``flags.Error`` naming where it was looked for and the flagfiles there.
    """
    resolved = []
    for arg in argv:
        for prefix in ("--flagfile=", "-flagfile="):
            if arg.startswith(prefix):
                path = arg[len(prefix):]
                if not os.path.exists(path) and not os.path.isabs(path):
                    candidate = os.path.join(_TRAINERS_DIR, path)
                    if os.path.exists(candidate):
                        arg, path = prefix + candidate, candidate
                if not os.path.isfile(path) or not os.access(path, os.R_OK):
                    known = sorted(n for n in os.listdir(_TRAINERS_DIR) if n.endswith(".flags"))
                    where = path if os.path.isabs(path) else (
                        f"{os.path.abspath(path)} or {os.path.join(_TRAINERS_DIR, path)}")
                    raise flags.Error(
                        f"--flagfile={arg[len(prefix):]}: no readable file {where} (the "
                        f"flagfiles in trainers/: {', '.join(known)}).")
        resolved.append(arg)
    return resolved


def _resolve_data_dir(path: str | None) -> str | None:
    if path is None or os.path.isabs(path) or os.path.exists(path):
        return path
    from_root = os.path.join(_REPO_ROOT, path)
    return from_root if os.path.exists(from_root) else path


def data_config(dataset: str, data_dir: str | None, channels: int | None = None,
                labels: bool = False):
    from trainers import data

    return data.DataConfig(
        dataset=dataset, data_dir=_resolve_data_dir(data_dir), batch_size=FLAGS.batch_size,
        eval_batch_size=FLAGS.eval_batch_size, flip=FLAGS.flip, seed=FLAGS.seed,
        max_eval_examples=FLAGS.max_eval_examples, channels=channels, labels=labels)


def train_config():
    from trainers import training

    return training.TrainConfig(
        output_dir=FLAGS.output_dir, train_steps=FLAGS.train_steps,
        learning_rate=FLAGS.learning_rate, optimizer=FLAGS.optimizer,
        adamax_beta2=FLAGS.adamax_beta2, warmup_steps=FLAGS.warmup_steps,
        polyak_decay=FLAGS.polyak_decay, l2=FLAGS.l2, clip_grad_norm=FLAGS.clip_grad_norm,
        mixed_precision=FLAGS.mixed_precision, jit_compile=FLAGS.jit_compile, seed=FLAGS.seed,
        eval_every=FLAGS.eval_every, checkpoint_every=FLAGS.checkpoint_every,
        summary_every=FLAGS.summary_every, log_every=FLAGS.log_every,
        num_sample_images=FLAGS.num_sample_images, temperature=FLAGS.temperature,
        max_consecutive_skipped=FLAGS.max_consecutive_skipped,
        recalibration_batches=FLAGS.recalibration_batches,
        keep_checkpoints=FLAGS.keep_checkpoints, allow_other_data=FLAGS.allow_other_data)


def model_spec(run_data) -> "tfnvp.ImageFlowSpec":
    """The --model's specification from the model flags (``trainers/model_flags.py``), for
    the images (and, with --conditional, the classes) of ``run_data``."""
    from trainers import data, training

    num_classes = data.num_classes(run_data) if FLAGS.conditional else None
    return model_flags.model_spec(FLAGS, FLAGS.dataset, data.image_shape(run_data), num_classes,
                                  training.MIXED_PRECISION[FLAGS.mixed_precision])


def _run_data_config():
    """For eval/export: the run's dataset unless --dataset overrides it."""
    from trainers import run_dir

    stored = run_dir.read_config(FLAGS.output_dir)
    dataset = FLAGS.dataset or stored["data"]["dataset"]
    stored_input = stored.get("input", {})
    data_dir = FLAGS.data_dir if FLAGS.data_dir is not None else stored_input.get("data_dir")
    channels = FLAGS.channels if FLAGS.channels is not None else stored_input.get("channels")
    return data_config(dataset, data_dir, channels)


# ------------------------------------------------------------------------ modes
def execute(flagfile: str | None = None) -> dict:
    """Runs --mode with the parsed flags; returns what the mode produced.

    A training run's input iterator stays held afterwards (``process_exit``): ``run()``
    releases it, ``main()`` ends the process without freeing it.

    ``flagfile``: the command's last --flagfile, which names the default --output_dir.
    """
    from tfnvp import UsageError

    console.configure_logging()
    if FLAGS.output_dir is None:
        FLAGS.output_dir = launch.default_output_dir(flagfile, FLAGS.dataset)
    if os.path.exists(FLAGS.output_dir) and not os.path.isdir(FLAGS.output_dir):
        raise UsageError(f"--output_dir={FLAGS.output_dir} is a file, not a run directory: "
                         "pass another --output_dir.")
    if FLAGS.mode == "train":
        name = FLAGS.strategy
        if FLAGS.jit_compile and name == "auto" and not strategy_lib.in_cluster():
            name = "one_device"  # XLA-compiled steps need unmirrored variables.
        strategy = strategy_lib.make_strategy(name)  # First: before TF starts up.
        step = launch.latest_step(FLAGS.output_dir)
        complete = launch.is_complete(FLAGS.output_dir, step, FLAGS.train_steps)
        print(launch.describe(FLAGS.output_dir, step, training=True, complete=complete,
                              train_steps=FLAGS.train_steps), flush=True)
        if complete:
            return dict(step=step, eval=None, stats=None)
        logging.info("%s", strategy_lib.describe(strategy))
        from trainers import data, preemption, run_lock, training

        run_data = data_config(FLAGS.dataset, FLAGS.data_dir, FLAGS.channels, FLAGS.conditional)
        with launch.removed_if_unstarted(FLAGS.output_dir):
            data.prepare(run_data)  # Downloads (TFDS) before the run writes anything.
            with contextlib.ExitStack() as stack:
                stop = stack.enter_context(preemption.StopSignals())
                if strategy_lib.is_chief(strategy):  # One trainer per run directory.
                    stop.add_cleanup(
                        stack.enter_context(run_lock.RunLock(FLAGS.output_dir)).release)
                return training.train(train_config(), model_spec(run_data), run_data,
                                      strategy)
    print(launch.describe(FLAGS.output_dir), flush=True)
    if FLAGS.mode == "eval":
        from trainers import evaluation

        return evaluation.evaluate_run(FLAGS.output_dir, _run_data_config(), FLAGS.checkpoint,
                                       FLAGS.recalibration_batches)
    # export
    from trainers import run_dir

    try:
        from trainers import export
    except ImportError as error:
        raise UsageError(f"--mode=export is unavailable: {error}") from error
    import tensorflow as tf

    from trainers import checkpoints, evaluation

    model, checkpoint = run_dir.restore_run(FLAGS.output_dir, FLAGS.checkpoint,
                                            conditioner_dtype=None)
    batches = evaluation.prepare_statistics(model, checkpoint, FLAGS.output_dir,
                                            _run_data_config(), FLAGS.recalibration_batches)
    version = FLAGS.export_version
    if version is None:
        version = evaluation.checkpoint_step(checkpoint)
    target = os.path.join(FLAGS.output_dir, "saved_model", str(version))
    weights = evaluation.describe_weights(checkpoint)
    try:
        path = export.export_version(model, os.path.dirname(target), version, weights)
    except (OSError, tf.errors.OpError) as error:
        if not checkpoints.is_disk_full(error):
            raise
        raise UsageError(f"Could not export to {target!r}: the disk is full. The previous export "
                         "(if any) is untouched and the partial one was removed; free space and "
                         "run the same command again.") from error
    statistics = evaluation.describe_statistics(model, batches)
    logging.info("Exported %s (%s; batch-norm statistics: %s) to %s", checkpoint, weights,
                 statistics, path)
    return dict(saved_model=path, version=version, checkpoint=checkpoint,
                batch_norm_statistics=statistics, weights=weights)


def _out_of_memory(error: BaseException) -> bool:
    import tensorflow as tf

    return isinstance(error, (tf.errors.ResourceExhaustedError, MemoryError))


def _out_of_memory_message(error: BaseException) -> str:
    """One line for an out-of-memory error: what ran out and the flag that fixes it."""
    first = _short(error).splitlines()[0] if str(error).strip() else "out of memory"
    if FLAGS.mode == "train":
        fix = (f"use a smaller --batch_size (now {FLAGS.batch_size}; or --eval_batch_size, now "
               f"{FLAGS.eval_batch_size}, if it ran out while evaluating)")
    else:
        fix = f"use a smaller --eval_batch_size (now {FLAGS.eval_batch_size})"
    return f"Out of memory ({first}): {fix}."


def _short(error: BaseException) -> str:
    """The error's message without TensorFlow's graph-node context."""
    message = getattr(error, "message", None) or str(error)
    lines = [line for line in message.splitlines() if line.strip()]
    kept = [line for line in lines if not line.lstrip().startswith(("[[", "Function call stack",
                                                                     "{{node"))]
    return "\n".join(kept[:6]) or type(error).__name__


def guarded_execute(flagfile: str | None = None) -> int:
    """``execute()`` with user errors (``console.is_user_error``) reported as one clear
    message; returns the exit code.  Any other error propagates with its traceback: it
    comes from tfnvp, the trainers or a library, not from the command line."""
    from trainers import preemption

    try:
        with graph_optimization.first_call_rewrites():  # The run's steps, eval, export.
            execute(flagfile)
    except preemption.Preempted as stopped:
        logging.warning("%s", stopped)
        print(f"{stopped} (exit status {preemption.EXIT_PREEMPTED})", file=sys.stderr, flush=True)
        return preemption.EXIT_PREEMPTED
    except KeyboardInterrupt:  # Outside training (which stops gracefully, see preemption.py).
        print("Interrupted.", file=sys.stderr, flush=True)
        return 128 + 2
    except Exception as error:  # noqa: BLE001 - the user's errors; the others are re-raised.
        if not console.is_user_error(error):
            raise
        if FLAGS.verbose:
            traceback.print_exc()
        message = _out_of_memory_message(error) if _out_of_memory(error) else _short(error)
        print(f"Error ({type(error).__name__}): {message}", file=sys.stderr, flush=True)
        logging.error("%s: %s", type(error).__name__, message)
        return 1
    return 0


def run(argv: list[str]) -> int:
    """Parses ``argv`` (``argv[0]`` is the program) and runs; for tests and embedding."""
    FLAGS.unparse_flags()
    try:
        FLAGS(resolve_flagfiles(list(argv)))
    except flags.Error as error:
        print(f"FATAL Flags parsing error: {error}\nPass --helpshort or --helpfull to see help "
              "on flags.", file=sys.stderr, flush=True)
        return 1
    try:
        return guarded_execute(launch.last_flagfile(argv))
    finally:
        process_exit.release()  # The caller goes on: what the command held is freed here.


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        code = guarded_execute(launch.last_flagfile(sys.argv))
    except Exception:  # noqa: BLE001 - not the user's (guarded_execute): its traceback, status 1.
        traceback.print_exc()
        code = 1
    # Everything is written. Freeing the run's objects at exit could wait on TensorFlow's
    # threads (process_exit), and Python's last garbage collection would walk the traced
    # graphs for tens of seconds: the process ends without either.
    process_exit.exit_now(code)


def console_main() -> None:
    """The ``tfnvp-train`` command (setup.cfg entry point); ``python trainers/train.py``."""
    console.exit_if_help(
        sys.argv, "tfnvp-train: train, evaluate or export Real NVP or Glow (README.md, "
        "\"The trainer\"; docs/training.md).",
        "tfnvp-train --flagfile=digits.flags [--flag=value ...]   "
        "(a checkout: python trainers/train.py ...)", HELP_GROUPS, FLAGS)
    # absl reads --flagfile inside app.run, so bare names are resolved first.
    try:
        resolved_argv = resolve_flagfiles(sys.argv)
    except flags.Error as bad_flagfile:
        sys.exit(f"FATAL Flags parsing error: {bad_flagfile}")
    app.run(main, argv=resolved_argv)


if __name__ == "__main__":
    console_main()
