"""Time to the first result: what a new process pays before each public path answers.

Every case runs in a fresh Python process (nothing cached by an earlier case)
that imports tfnvp before TensorFlow, as the README does: TensorFlow's oneDNN
kernels are on unless ``TF_ENABLE_ONEDNN_OPTS`` says otherwise (``onednn`` in
the results and the table's last column: whether the case ran them).  It
reports, in seconds:

* ``import``: ``import tfnvp`` (TensorFlow, Keras and TFP included);
* ``build``: constructing the model (its weights are created at construction);
* ``first``: the path's first call (tracing, differentiation, graph
  optimization and the first run); for ``user_loop`` split into ``trace``
  (``get_concrete_function``) and ``first_run`` (graph optimization and the
  first run);
* ``steady``: the median of the next calls of the same size;
* ``overhead = first - steady``: what the first call costs beyond the work
  itself, the figure issue 27's targets are set on (a steady call alone can
  take tens of seconds on a 2-core CPU).

Models: ``digits`` (the quickstart's, batch 64), ``cifar_small`` (2 scales,
1 residual block, 16 feature maps, batch 16), ``paper`` (the paper's CIFAR-10
model, batch 64).  Paths: ``trainer_step`` (``trainers.steps.TrainSteps``
under the trainer's strategy, with the trainer's default ``--l2`` and
``--clip_grad_norm``, called as the trainer calls it: inside
``tfnvp.graph_optimization.first_call_rewrites()``), ``user_loop`` (a user's ``tf.function``:
tape, ``-mean(model.distribution.log_prob(x, training))``, Adam), ``fit``
(``model.fit`` on uint8 images), ``log_prob``, ``bits_per_dim``, ``sample``,
``encode_decode`` (eager public methods), ``keras_load`` (``.keras`` file
load and first ``log_prob``), ``load_run`` (a run directory written by the
trainer: load and first ``sample``).

``--optimizer=fused`` gives the ``user_loop`` and ``fit`` paths ``tfnvp.FusedAdam``
instead of ``keras.optimizers.Adam`` (``both``: each case with either, interleaved).

``--traced_once=both`` runs every case twice, with the conditioner bodies
traced once per kind (``tfnvp.nets.shared_body``, the default) and traced
inline, interleaved, so the A/B comes from one run on one machine.
``--compare=DIR`` runs every case also in the checkout ``DIR`` (another
version of tfnvp, with this script copied to its ``bench/``), interleaved:
before/after figures from one run.

Usage::

    python bench/first_result.py --models=digits,cifar_small --paths=all --out=first.json
    python bench/first_result.py --compare=../tfnvp-main --models=paper --paths=trainer_step
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODELS = {
    "digits": dict(image_shape=(8, 8, 1), num_scales=2, num_res_blocks=2, hidden_channels=32,
                   batch=64),
    "cifar_small": dict(image_shape=(32, 32, 3), num_scales=2, num_res_blocks=1,
                        hidden_channels=16, batch=16),
    "paper": dict(paper="cifar10", batch=64),
}
PATHS = ("trainer_step", "user_loop", "fit", "log_prob", "bits_per_dim", "sample",
         "encode_decode", "keras_load", "load_run")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sync(value) -> None:
    import tensorflow as tf

    for t in tf.nest.flatten(value):
        if hasattr(t, "numpy"):
            t.numpy()


def _timed(fn, repeats: int) -> tuple[float, float]:
    """(first call, median of ``repeats`` more calls) of ``fn()``, in seconds."""
    start = time.perf_counter()
    _sync(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        _sync(fn())
        times.append(time.perf_counter() - start)
    return first, statistics.median(times)


def _model(name: str):
    import tfnvp

    spec = dict(MODELS[name])
    spec.pop("batch")
    if "paper" in spec:
        return tfnvp.RealNVP.from_paper(spec["paper"])
    return tfnvp.RealNVP(**spec)


def _onednn_enabled() -> bool | None:
    """Whether this process runs TensorFlow's oneDNN kernels (``None``: a checkout from
    before ``tfnvp._compat.onednn_enabled``)."""
    try:
        from tfnvp._compat import onednn_enabled
    except ImportError:
        return None
    return onednn_enabled()


def child(model_name: str, path: str, traced_once: bool, repeats: int,
          batch: int | None = None, optimizer_name: str = "keras") -> dict:
    """One case, in this (fresh) process."""
    start = time.perf_counter()
    # tfnvp first, as the README imports it: before TensorFlow loads, it turns TensorFlow's
    # oneDNN kernels on where TensorFlow would leave them off (AVX2-only CPUs among them)
    # unless TF_ENABLE_ONEDNN_OPTS is set, as the trainer does; imported after TensorFlow, it
    # cannot.
    import tfnvp  # isort: skip
    import keras
    import numpy as np
    import tensorflow as tf

    try:
        from tfnvp.nets import shared_body
    except ImportError:  # A checkout from before shared bodies: always inline.
        shared_body = None

    result = dict(model=model_name, path=path, traced_once=traced_once,
                  onednn=_onednn_enabled(), optimizer=optimizer_name)

    def adam():
        return (tfnvp.FusedAdam if optimizer_name == "fused" else keras.optimizers.Adam)(1e-3)

    result["import"] = time.perf_counter() - start
    if shared_body is not None:
        shared_body.ENABLED = traced_once
    result["traced_once"] = traced_once and shared_body is not None
    batch = batch or MODELS[model_name]["batch"]
    result["batch"] = batch
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    model = _model(model_name)
    result["build"] = time.perf_counter() - start
    shape = (batch,) + tuple(model.image_shape)
    images = np.random.default_rng(0).integers(0, 256, size=shape, dtype=np.uint8)
    pixels = tf.constant(images.astype(np.float32) + 0.5)
    seeds = iter(range(1, 1_000_000))
    work = tempfile.mkdtemp(prefix="first_result_")

    if path == "trainer_step":
        sys.path.insert(0, ROOT)
        from trainers import steps as steps_lib
        from trainers import strategy as strategy_lib
        from trainers import train as train_command

        strategy = strategy_lib.make_strategy("mirrored")
        with strategy.scope():
            model = _model(model_name)
            optimizer = steps_lib.make_optimizer(1e-3)
            optimizer.build(model.trainable_variables)
        dataset = strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors(pixels).repeat())
        iterator = iter(dataset)
        # The trainer's defaults: its L2 penalty on the weight scales (the paper's 5e-5), no
        # gradient clipping.
        defaults = {name: train_command.FLAGS[name].default for name in ("l2", "clip_grad_norm")}
        result.update(defaults)
        steps = steps_lib.TrainSteps(model, optimizer, strategy, iterator.element_spec, batch,
                                     **defaults)
        try:  # As the trainer calls its steps (a checkout from before: TensorFlow's defaults).
            from tfnvp.graph_optimization import first_call_rewrites
        except ImportError:
            first_call_rewrites = contextlib.nullcontext

        def fn():
            with first_call_rewrites():
                return steps.train_step(next(iterator))
    elif path == "user_loop":
        optimizer = adam()
        optimizer.build(model.trainable_variables)

        @tf.function
        def user_step(x):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(model.distribution.log_prob(
                    x, bijector_kwargs=dict(training=True)))
            optimizer.apply(tape.gradient(loss, model.trainable_variables),
                            model.trainable_variables)
            return loss

        begin = time.perf_counter()
        user_step.get_concrete_function(pixels)
        result["trace"] = time.perf_counter() - begin
        fn = lambda: user_step(pixels)  # noqa: E731
    elif path == "fit":
        model.compile(optimizer=adam())
        fn = lambda: model.fit(images, batch_size=batch, epochs=1, verbose=0)  # noqa: E731
    elif path == "log_prob":
        fn = lambda: model.log_prob(pixels)  # noqa: E731
    elif path == "bits_per_dim":
        fn = lambda: model.bits_per_dim(images, seed=[next(seeds), 0])  # noqa: E731
    elif path == "sample":
        fn = lambda: model.sample(batch, seed=[next(seeds), 0])  # noqa: E731
    elif path == "encode_decode":
        fn = lambda: model.decode(model.encode(pixels))  # noqa: E731
    elif path == "keras_load":
        file = os.path.join(work, "model.keras")
        model.save(file)

        def fn():
            return keras.models.load_model(file).log_prob(pixels)
    elif path == "load_run":
        run = _trained_run(work, model_name)

        def fn():
            return tfnvp.load_run(run).sample(batch, seed=[next(seeds), 0])
    else:
        raise ValueError(f"unknown path {path!r}; choose from {PATHS}")
    first, steady = _timed(fn, repeats)
    if "trace" in result:  # Traced before the first call: part of it.
        result["first_run"] = first
        first += result["trace"]
    result.update(first=first, steady=steady, overhead=first - steady)
    return result


def _trained_run(work: str, model_name: str) -> str:
    """A run directory of a 1-step trainer run of ``model_name`` (digits only)."""
    if model_name != "digits":
        raise ValueError("load_run is timed on the digits model (the quickstart's run).")
    run = os.path.join(work, "run")
    subprocess.run([sys.executable, os.path.join(ROOT, "trainers", "train.py"),
                    f"--flagfile={os.path.join(ROOT, 'trainers', 'digits.flags')}",
                    f"--output_dir={run}", "--num_scales=2", "--num_res_blocks=2",
                    "--hidden_channels=32", "--dropout=0", "--train_steps=1", "--eval_every=1",
                    "--num_sample_images=0", "--recalibration_batches=1"],
                   check=True, capture_output=True)
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="digits,cifar_small")
    parser.add_argument("--paths", default="all")
    parser.add_argument("--traced_once", choices=("on", "off", "both"), default="on")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--optimizer", choices=("keras", "fused", "both"), default="keras",
                        help="Adam of the user_loop and fit paths: keras.optimizers.Adam or "
                             "tfnvp.FusedAdam")
    parser.add_argument("--batch", type=int, default=None,
                        help="batch size of every case (default: the model's, MODELS)")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    parser.add_argument("--compare", default=None,
                        help="another checkout whose bench/first_result.py runs each case too")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model_name, path, traced, optimizer_name = args.child.split(":")
        print("RESULT " + json.dumps(child(model_name, path, traced == "on", args.repeats,
                                           args.batch, optimizer_name)))
        return 0
    paths = PATHS if args.paths == "all" else args.paths.split(",")
    modes = ("on", "off") if args.traced_once == "both" else (args.traced_once,)
    optimizers = ("keras", "fused") if args.optimizer == "both" else (args.optimizer,)
    checkouts = [ROOT] + ([os.path.abspath(args.compare)] if args.compare else [])
    results = []
    print("| model | path | checkout | traced once | Adam | import s | build s | first s | "
          "steady s | overhead s | oneDNN |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for model_name in args.models.split(","):
        for path in paths:
            if path == "load_run" and model_name != "digits":
                continue
            uses_adam = path in ("user_loop", "fit")
            for checkout, mode, adam in itertools.product(
                    checkouts, modes, optimizers if uses_adam else ("keras",)):
                r = _run_case(checkout, model_name, path, mode, args.repeats, args.batch, adam)
                name = os.path.basename(checkout)
                if "error" in r:
                    print(f"| {model_name} | {path} | {name} | {mode} | {adam} | "
                          f"failed: {r['error']!r} |")
                    continue
                r["checkout"] = checkout
                results.append(r)
                print(f"| {model_name} | {path} | {name} | {r['traced_once']} | "
                      f"{adam if uses_adam else ''} | {r['import']:.1f} | {r['build']:.1f} | "
                      f"{r['first']:.1f} | {r['steady']:.2f} | {r['overhead']:.1f} | "
                      f"{r['onednn']} |", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(dict(cpu=_cpu_name(), results=results), f, indent=1)
    return 0


def _run_case(checkout: str, model_name: str, path: str, mode: str, repeats: int,
              batch: int | None, optimizer_name: str = "keras") -> dict:
    """One case in a fresh process, with ``checkout``'s tfnvp and trainers."""
    out = subprocess.run(
        [sys.executable, os.path.join(checkout, "bench", "first_result.py"),
         f"--child={model_name}:{path}:{mode}:{optimizer_name}", f"--repeats={repeats}"]
        + ([f"--batch={batch}"] if batch else []),
        capture_output=True, text=True, cwd=checkout,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=checkout))
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode or not lines:
        return dict(error=out.stderr[-300:])
    return json.loads(lines[-1][len("RESULT "):])


def _cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        names = [l.split(":", 1)[1].strip() for l in f if l.startswith("model name")]
    with open("/proc/cpuinfo") as f:
        avx512 = "avx512f" in f.read()
    return f"{names[0] if names else '?'} ({'AVX-512' if avx512 else 'AVX2'})"


if __name__ == "__main__":
    sys.exit(main())
