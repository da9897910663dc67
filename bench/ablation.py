#!/usr/bin/env python
"""Ablation of Real NVP's options on MNIST or CIFAR-10 JPEGs at equal steps (issues 9, 11).

    python bench/ablation.py                                   # every configuration
    python bench/ablation.py --configs=baseline,no_skip --steps=1500
    python bench/ablation.py --dataset=cifar10_jpeg --configs=baseline,flowpp --name=x
    python bench/ablation.py --table                           # print the saved results

Each named configuration is a set of ``tfnvp.RealNVP`` constructor options
on top of a small shared model (28x28x1, 3 scales, ``--num_res_blocks``,
``--hidden_channels``); ``CONFIGS`` holds the ones of issue 9:

  baseline     the defaults: skip connections, symmetric logit map,
               checkerboard factor-out; since issue 29 the release's conditioner
               form (the tables of issues 9 and 11 had direct_conditioner's)
  release_conditioner  Real NVP's conditioner as the authors' release has it
               (conditioner_form="release", its channel-major squeeze and its
               batch-norm momentum and epsilon; 9 maps on CIFAR-10)
  direct_conditioner  the form of before (conditioner_form="direct",
               space_to_depth squeeze, Keras' batch-norm epsilon)
  no_skip      skip_connections=False (only the residual connections)
  asymmetric   logit_map="asymmetric" (section 4.1's formula as printed)
  channel      factor_out="channel" (the space-to-depth channel split:
               alternate rows go on)
  variational  dequantization="variational" (issue 11: Flow++'s learned
               q(u | x), trained jointly; its evaluation bits/dim is the
               variational bound; its parameter count includes q's)
  variational_q16  the same with the baseline's feature maps and a
               half-width dequantizer (dequantizer_channels=16)
  logistic_mixture  coupling="logistic_mixture", K = 3 (Flow++'s CDF coupling)
  logistic_mixture_k2  the same with K = 2 and wider feature maps
  flowpp       all of Flow++'s components: variational dequantization,
               logistic-mixture couplings, gated attention at the coarse scales
  glow         tfnvp.Glow instead (CIFAR-10: 3 levels; MNIST: 2 levels, 96 maps):
               actnorm, 1x1 convolutions, affine couplings, K = 6 steps per
               level, 36 feature maps, the learned split and top priors
               (314,364 parameters; issue 11's row predates the priors)
  glow_no_priors  the same without the learned priors (split_prior=False,
               learn_top=False: N(0, I) for every latent; 309,672)
  glow_additive  additive couplings (the release's default), 48 maps (305,652)
  glow_variational  the same with variational dequantization (dequantizer
               width 16, 35 feature maps: 314,570)

The issue 11 configurations reduce the feature maps so that the parameter
count stays within 10% of the baseline's.

Training: the same for all (``--steps`` Adam steps, lr ``--learning_rate``,
batch ``--batch_size`` of dequantized training images in a seeded order, the
loss of ``trainers/steps.py``: mean NLL in nats plus ``5e-5 * sum(g^2)`` on
the weight-norm gains, global gradient norm clipped at 100; same initial
seed), run eagerly-compiled with ``tf.function``.

Evaluation, in evaluation mode (running batch-norm statistics, the user's
path: ``RealNVP.bits_per_dim(training=False)``) on the first ``--eval_examples``
MNIST test images (CIFAR-10 JPEGs: a fixed random subset) with fixed dequantization noise: the mean bits/dim and its
standard error over images.  Running statistics lag the weights during
training; so that the comparison measures the architectures and not that lag,
the models use ``batch_norm_momentum=0.9`` and, after training, the running
statistics are recomputed at the final weights by ``--recalibration_batches``
training-mode forward passes over training batches without weight updates
(the stale statistics keep a weight of ``0.9**n``: 0.5% for n = 50).

Every configuration runs in its own process (``--child``), one after the
other; results are merged into ``bench/results/<--name>.json`` as each
finishes (under a file lock, so several invocations with different
``--configs`` may run at once), and a markdown table is printed.  Use
``nice``: a run is long.
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import math
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, "bench", "results")

CONFIGS: dict[str, dict] = {
    "baseline": {},
    "no_skip": dict(skip_connections=False),
    "asymmetric": dict(logit_map="asymmetric"),
    "channel": dict(factor_out="channel"),
    # Issue 11 (Flow++'s components), each at about the baseline's parameter count
    # (+-10%, the feature maps reduced to pay for the extra weights; at the defaults on
    # MNIST: 226,713 baseline, 211,548 variational, 234,746 logistic_mixture, 233,982 flowpp).
    "variational": dict(dequantization="variational", hidden_channels=7),
    # The baseline's feature maps, a half-width dequantizer (16; MNIST 235,981, CIFAR-10 326,343).
    "variational_q16": dict(dequantization="variational", dequantizer_channels=16),
    "logistic_mixture": dict(coupling="logistic_mixture", mixture_components=3,
                             hidden_channels=6),
    # K = 2 components with more feature maps than logistic_mixture's, for CIFAR-10 (5 maps,
    # 318,202); on MNIST no width is within 10% (6: 202,081; 7: 255,028).
    "logistic_mixture_k2": dict(coupling="logistic_mixture", mixture_components=2,
                                hidden_channels=6),
    "flowpp": dict(dequantization="variational", coupling="logistic_mixture",
                   mixture_components=3, attention=True, attention_heads=2, hidden_channels=5),
    # Glow (model="glow"; tfnvp.Glow's own options), at the CIFAR-10 baseline's 313,291.
    "glow": dict(model="glow", steps_per_scale=6, hidden_channels=36),
    # Issue 29: the same without the learned priors (the issue 11 row's model; 309,672 on
    # CIFAR-10 against 314,364 with them), and additive couplings with wider networks (305,652).
    "glow_no_priors": dict(model="glow", steps_per_scale=6, hidden_channels=36,
                           split_prior=False, learn_top=False),
    "glow_additive": dict(model="glow", steps_per_scale=6, hidden_channels=48,
                          coupling="additive"),
    # Issue 29: Real NVP's conditioner forms, every option that differs between them explicit
    # (the baseline's defaults changed to the release's form with it).
    "release_conditioner": dict(conditioner_form="release", channel_squeeze="channel_major",
                                conditioner_batch_norm_momentum=0.9,
                                conditioner_batch_norm_epsilon=1e-4),
    "direct_conditioner": dict(conditioner_form="direct", channel_squeeze="space_to_depth",
                               conditioner_batch_norm_momentum=None,
                               conditioner_batch_norm_epsilon=1e-3),
    "glow_variational": dict(model="glow", steps_per_scale=6, hidden_channels=35,
                             dequantization="variational", dequantizer_channels=16),
}
# The same +-10% on CIFAR-10's 3 channels (baseline 313,291: variational 294,908,
# logistic_mixture 309,894, flowpp 297,061): the mixture heads output 3K + 2 maps per channel.
# MNIST's 28 x 28 allows 2 Glow levels (28 -> 14 -> 7); the networks widened to about the
# baseline's 226,713: glow 210,124, glow_no_priors 209,832, glow_additive 230,020.
DATASET_OVERRIDES: dict[str, dict[str, dict]] = {
    "mnist": {"glow": dict(num_scales=2, hidden_channels=96),
              "glow_no_priors": dict(num_scales=2, hidden_channels=96),
              "glow_additive": dict(num_scales=2, hidden_channels=112)},
    # Real NVP's release conditioner reads 2C + 1 channels and ends in a 1x1 convolution:
    # 9 maps on CIFAR-10 for 311,413 parameters (8: 254,669); MNIST keeps 8 (207,695).
    "cifar10_jpeg": {"release_conditioner": dict(hidden_channels=9),
                     "logistic_mixture": dict(hidden_channels=4),
                     "logistic_mixture_k2": dict(hidden_channels=5),
                     "flowpp": dict(hidden_channels=4, mixture_components=2)},
}
DATASETS = {"mnist": ("mnist_idx", "/work/shared/data/mnist"),
            "cifar10_jpeg": ("image_folder", "/work/shared/data/cifar10_jpeg")}


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help=f"comma-separated names from {sorted(CONFIGS)}")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--num_res_blocks", type=int, default=1)
    parser.add_argument("--hidden_channels", type=int, default=8)
    parser.add_argument("--eval_examples", type=int, default=2000)
    parser.add_argument("--recalibration_batches", type=int, default=50)
    parser.add_argument("--dataset", default="mnist", choices=sorted(DATASETS))
    parser.add_argument("--data_dir", default=None, help="default: the dataset's folder in "
                        "/work/shared/data")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--name", default="ablation_mnist", help="results file name")
    parser.add_argument("--table", action="store_true", help="only print the saved table")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = [c for c in args.configs.split(",") if c not in CONFIGS]
    if unknown:
        parser.error(f"unknown configurations {unknown}; choose from {sorted(CONFIGS)}")
    if min(args.steps, args.batch_size, args.eval_examples) < 1:
        parser.error("--steps, --batch_size and --eval_examples must be positive")
    return args


def _load(dataset: str, data_dir: str | None):
    """(train, test) uint8 ``[N, H, W, C]`` through the trainers' readers, the test images
    in a fixed random order (the JPEG folder's files are sorted by class)."""
    import numpy as np

    from trainers import sources

    kind, default_dir = DATASETS[dataset]
    source = sources.get_source(kind, data_dir or default_dir)

    def images(training: bool):
        split = source.split(training, seed=0)  # records in file order
        return next(split.decode(split.records).batch(1 << 20).as_numpy_iterator())

    test = images(False)
    if dataset != "mnist":  # MNIST keeps its first test images (the issue 9 results).
        test = test[np.random.default_rng(12345).permutation(len(test))]
    return images(True), test


def run_child(args: argparse.Namespace) -> dict:
    """Trains and evaluates one configuration; returns its result row."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import keras

    import tfnvp

    name = args.child
    train, test = _load(args.dataset, args.data_dir)
    test = test[:args.eval_examples]
    keras.utils.set_random_seed(args.seed)
    options = {**CONFIGS[name], **DATASET_OVERRIDES.get(args.dataset, {}).get(name, {})}
    if options.get("model") == "glow":
        model = tfnvp.Glow(train.shape[1:], **{"num_scales": 3, "validate_args": False,
                                               **{k: v for k, v in options.items()
                                                  if k != "model"}})
    else:
        options = {"num_res_blocks": args.num_res_blocks,
                   "hidden_channels": args.hidden_channels, **options}
        model = tfnvp.RealNVP(train.shape[1:], num_scales=3, batch_norm_momentum=0.9,
                              validate_args=False, **options)
    params = int(sum(np.prod(v.shape) for v in model.trainable_variables))
    optimizer = keras.optimizers.Adam(args.learning_rate)
    variables = model.trainable_variables
    image_spec = tf.TensorSpec([args.batch_size] + list(train.shape[1:]), tf.uint8)

    @tf.function(input_signature=[image_spec, tf.TensorSpec([2], tf.int64)])
    def train_step(images, seed):
        with tf.GradientTape() as tape:
            objective = model.objective(images, training=True, seed=seed)
            loss = tf.reduce_mean(objective.nll) + model.regularization_loss()
        grads, _ = tf.clip_by_global_norm(tape.gradient(loss, variables), 100.0)
        optimizer.apply_gradients(zip(grads, variables))
        return tf.reduce_mean(objective.bits_per_dim)

    @tf.function(input_signature=[image_spec, tf.TensorSpec([2], tf.int64)])
    def statistics_pass(images, seed):
        return model.objective(images, training=True, seed=seed).nll

    eval_spec = tf.TensorSpec([None] + list(train.shape[1:]), tf.uint8)

    @tf.function(input_signature=[eval_spec, tf.TensorSpec([2], tf.int64)])
    def eval_bits(images, seed):
        return model.bits_per_dim(images, seed=seed, training=False)

    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(train))
    position = 0

    def next_batch():
        nonlocal order, position
        if position + args.batch_size > len(order):
            order, position = rng.permutation(len(train)), 0
        batch = train[order[position:position + args.batch_size]]
        position += args.batch_size
        return tf.constant(batch)

    start = time.perf_counter()
    train_bits = []
    for step in range(args.steps):
        train_bits.append(float(train_step(next_batch(), tf.constant([args.seed, step], tf.int64))))
        if (step + 1) % 250 == 0 or step + 1 in (10, 50):
            print(f"[{name}] step {step + 1} ({time.perf_counter() - start:.0f} s): train "
                  f"bits/dim (last 50) {np.mean(train_bits[-50:]):.4f}", file=sys.stderr,
                  flush=True)
    train_seconds = time.perf_counter() - start
    for k in range(args.recalibration_batches if model.batch_norm_layers() else 0):  # Glow: none.
        statistics_pass(next_batch(), tf.constant([args.seed + 1, k], tf.int64))
    bits = np.concatenate([eval_bits(tf.constant(test[k:k + 250]),
                                     tf.constant([12345, k], tf.int64)).numpy()
                           for k in range(0, len(test), 250)])
    if not np.all(np.isfinite(bits)):
        raise RuntimeError(f"{name}: non-finite evaluation bits/dim")
    # 256 samples at temperature 1 (evaluation mode): how many are not finite (the
    # logistic-mixture NaN defect, fixed), and the first 36 as one grid per configuration.
    samples = model.sample(256, seed=[args.seed, 36]).numpy()
    nonfinite = int((~np.isfinite(samples)).reshape(len(samples), -1).any(axis=1).sum())
    picture = tfnvp.grid.save_png(tfnvp.grid.image_grid(samples[:36], rows=6),
                                  os.path.join(RESULTS_DIR, f"{args.name}_{name}_samples.png"),
                                  scale=3)
    return dict(config=name, dataset=args.dataset, options=options, params=params,
                steps=args.steps,
                batch_size=args.batch_size, train_seconds=round(train_seconds, 1),
                train_bits_per_dim_last100=float(np.mean(train_bits[-100:])),
                eval_bits_per_dim=float(bits.mean()),
                eval_std_err=float(bits.std(ddof=1) / math.sqrt(len(bits))),
                eval_examples=int(len(bits)), samples=os.path.relpath(picture, REPO),
                nonfinite_samples_of_256=nonfinite)


def _results_path(name: str) -> str:
    return os.path.join(RESULTS_DIR, f"{name}.json")


def _table(rows: list[dict]) -> str:
    lines = ["| config | params | steps | train wall time incl. tracing (s) | train bits/dim (last 100) "
             "| eval bits/dim ± s.e. | non-finite samples of 256 |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['config']} | {r['params']:,} | {r['steps']} | {r['train_seconds']:.0f} "
                     f"| {r['train_bits_per_dim_last100']:.4f} "
                     f"| {r['eval_bits_per_dim']:.4f} ± {r['eval_std_err']:.4f} "
                     f"| {r.get('nonfinite_samples_of_256', 'not counted')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    sys.path.insert(0, REPO)
    if args.child:
        print("RESULT " + json.dumps(run_child(args)), flush=True)
        return
    path = _results_path(args.name)
    if not args.table:
        passthrough = [a for a in (argv if argv is not None else sys.argv[1:])
                       if not a.startswith(("--configs", "--table"))]
        for name in args.configs.split(","):
            # The child's progress and errors go to stderr as they happen.
            process = subprocess.run([sys.executable, os.path.abspath(__file__), f"--child={name}",
                                      *passthrough], stdout=subprocess.PIPE, text=True)
            results = [line[len("RESULT "):] for line in process.stdout.splitlines()
                       if line.startswith("RESULT ")]
            if process.returncode or not results:
                raise SystemExit(f"configuration {name} failed (exit {process.returncode})")
            _merge(path, name, {**json.loads(results[0]),
                                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                                    timespec="seconds"), "args": vars(args)})
    saved = json.load(open(path)) if os.path.exists(path) else {"runs": {}}
    print(_table([saved["runs"][n] for n in CONFIGS if n in saved["runs"]]))


def _merge(path: str, name: str, row: dict) -> None:
    """Adds ``row`` under ``name`` to the JSON at ``path`` (locked: runs may be concurrent)."""
    os.makedirs(RESULTS_DIR, exist_ok=True)
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        saved = json.load(open(path)) if os.path.exists(path) else {"runs": {}}
        saved["runs"][name] = row
        with open(path + ".tmp", "w") as stream:
            json.dump(saved, stream, indent=2)
        os.replace(path + ".tmp", path)


if __name__ == "__main__":
    main()
