"""trainers/train.py and its modules: flags and flagfiles, compiled steps, error handling,
--mode=eval/export.  In-process (``train.run(argv)``) on tiny models, except one CLI check."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from absl import flags as absl_flags
import tensorflow as tf
from PIL import Image

import tfnvp
from trainers import (console, data, evaluation, model_flags, process_exit, run_dir, train,
                      train_toy, training, visualize)
from trainers import steps as steps_lib
from trainers import strategy as strategy_lib

REPO = Path(__file__).resolve().parents[1]
FLAGFILES = sorted((REPO / "trainers").glob("*.flags"))
# Tiny model on the bundled digits; the default strategy may have 2 replicas here
# (tests/conftest.py configures 2 logical CPUs), so batches are even.
TINY = ["--flagfile=digits.flags", "--num_scales=1", "--num_res_blocks=0", "--hidden_channels=8",
        "--batch_size=16", "--eval_batch_size=300", "--num_sample_images=4", "--log_every=1",
        "--summary_every=2", "--eval_every=1000", "--checkpoint_every=2",
        "--recalibration_batches=1"]
PAPER_FLIPS = {"cifar10", "celeba", "lsun_bedroom", "lsun_tower", "lsun_church"}


def _run(*args: str) -> int:
    return train.run(["train.py", *args])


def _hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _tiny_steps(strategy, model, batches: tf.data.Dataset):
    with strategy.scope():
        optimizer = steps_lib.make_optimizer(1e-3)
    iterator = iter(strategy.experimental_distribute_dataset(batches))
    steps = steps_lib.TrainSteps(model, optimizer, strategy, iterator.element_spec,
                                 global_batch_size=16, l2=5e-5, clip_grad_norm=100.0)
    return steps, iterator, optimizer


def test_warmup_ramps_the_learning_rate_linearly_then_holds_it():
    optimizer = steps_lib.make_optimizer(1e-2, warmup_steps=4)
    weight = tf.Variable([1.0, -2.0])
    rates, values = [], []
    for _ in range(6):
        rates.append(float(optimizer.learning_rate))  # The rate of the next update t.
        optimizer.apply_gradients([(tf.constant([1.0, 1.0]), weight)])
        values.append(weight.numpy().copy())
    np.testing.assert_allclose(rates, [1e-2 * min(1.0, t / 4) for t in range(6)], rtol=1e-6)
    np.testing.assert_array_equal(values[0], [1.0, -2.0])  # Update 0 has rate 0.
    # Adam's first steps move by about the rate: the ramp reaches the weights.
    np.testing.assert_allclose(values[1] - values[0], [-2.5e-3, -2.5e-3], rtol=1e-3)
    assert float(steps_lib.make_optimizer(1e-2).learning_rate) == pytest.approx(1e-2)
    with pytest.raises(ValueError, match="warmup_steps"):
        steps_lib.make_optimizer(1e-2, warmup_steps=-1)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A tiny 4-step run with checkpoints at steps 2 and 4."""
    run = tmp_path_factory.mktemp("run")
    assert _run(*TINY, f"--output_dir={run}", "--train_steps=4") == 0
    return run


# ------------------------------------------------------------------ steps
def test_train_step_traces_once_and_learns():
    strategy = strategy_lib.make_strategy("mirrored")
    with strategy.scope():
        model = tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=0, hidden_channels=8,
                              synchronized_batch_norm=strategy.num_replicas_in_sync > 1)
    dataset = data.make_train_dataset(data.DataConfig("digits", batch_size=16))
    steps, _, optimizer = _tiny_steps(strategy, model, dataset)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    losses = [float(steps.train_step(next(iterator))["nll"]) for _ in range(6)]
    assert steps.train_step.experimental_get_tracing_count() == 1
    assert int(optimizer.iterations.numpy()) == 6
    assert all(math.isfinite(v) for v in losses)
    for _ in range(2):
        steps.diagnostics(strategy.experimental_local_results(next(iterator))[0])
    assert steps.diagnostics.experimental_get_tracing_count() == 1
    evaluator = evaluation.Evaluator(model)  # 297 examples in batches of 128: 128, 128, 41.
    result = evaluator.evaluate(data.make_eval_dataset(data.DataConfig("digits", eval_batch_size=128)))
    assert result.num_examples == 297
    # The model's objective, compiled once for every batch size.
    assert [f.experimental_get_tracing_count()
            for f in model.compiled_functions()["objective"]] == [1]


@pytest.mark.parametrize("option", ["jit_compile", "float16"])
def test_compiled_and_loss_scaled_steps(option):
    """XLA on one device; float16 conditioners with dynamic loss scaling (overflowing steps
    are skipped by the LossScaleOptimizer, which halves its scale, until it fits)."""
    strategy = strategy_lib.make_strategy("one_device")
    with strategy.scope():
        model = tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=0, hidden_channels=8,
                              conditioner_dtype="mixed_float16" if option == "float16" else None)
        optimizer = steps_lib.make_optimizer(1e-3, "float16" if option == "float16" else "none")
    dataset = data.make_train_dataset(data.DataConfig("digits", batch_size=16))
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    steps = steps_lib.TrainSteps(model, optimizer, strategy, iterator.element_spec, 16,
                                 jit_compile=option == "jit_compile")
    applied = [bool(steps.train_step(next(iterator))["applied"]) for _ in range(20)]
    assert steps.train_step.experimental_get_tracing_count() == 1
    assert applied[-1] and (all(applied) or option == "float16")
    assert int(optimizer.iterations.numpy()) == sum(applied)
    assert not training._nonfinite(model.weights)


def test_diagnostics_split_bits_per_dim_into_prior_and_log_det():
    strategy = strategy_lib.make_strategy("one_device")
    with strategy.scope():
        model = tfnvp.RealNVP((8, 8, 1), num_scales=2, num_res_blocks=0, hidden_channels=4)
    batch = next(iter(data.make_train_dataset(data.DataConfig("digits", batch_size=16))))
    steps, _, _ = _tiny_steps(strategy, model,
                              tf.data.Dataset.from_tensor_slices(batch).batch(16))
    parts = steps.diagnostics(batch)
    x, _ = model.dequantize(batch["x"], seed=batch["seed"])  # As the step: the batch's seeds.
    expected = tf.reduce_mean(tfnvp.bits_per_dim_from_log_prob(model.log_prob(x), 64))
    assert float(parts["bits_per_dim"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(parts["prior_bits_per_dim"] + parts["log_det_bits_per_dim"]) == pytest.approx(
        float(expected), rel=1e-5)


def test_l2_penalty_is_the_squared_norm_of_the_conditioner_kernels():
    model = tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=1, hidden_channels=4)
    for gain in model.regularized_weights():
        gain.assign(tf.random.uniform(gain.shape, 0.5, 2.0))
    kernels = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, tfnvp.nets.weight_norm.WeightNormConv2D):
            v = layer.direction.numpy()
            kernels.append(v * layer.gain.numpy() / np.sqrt((v ** 2).sum(axis=(0, 1, 2))))
    # 4 couplings x (in, 2 in the block, out, and the 1x1 skip convolutions from the input
    # convolution and from the block).
    assert len(kernels) == 4 * 6
    expected = sum(float((k.astype(np.float64) ** 2).sum()) for k in kernels)
    # The release's conditioner form (the default) also penalizes the checkerboard couplings'
    # scalar s-scales (its rescaling_scale); num_scales=1 has 4 checkerboard couplings.
    scales = [float(layer.scale.numpy()) for layer in model._flatten_layers(include_self=False)
              if isinstance(layer, tfnvp.nets.ShiftAndLogScale) and layer.regularized_scale]
    assert len(scales) == 4 and all(0.5 <= s <= 2.0 for s in scales)
    expected += sum(s ** 2 for s in scales)
    assert float(model.weight_scale_penalty()) == pytest.approx(expected, rel=1e-5)
    assert float(model.regularization_loss(0.5)) == pytest.approx(0.5 * expected, rel=1e-5)


def test_nonfinite_batch_skips_the_update_and_keeps_statistics():
    strategy = strategy_lib.make_strategy("mirrored")  # 2 replicas under tests/conftest.py
    with strategy.scope():
        model = tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=0, hidden_channels=8,
                              synchronized_batch_norm=strategy.num_replicas_in_sync > 1,
                              validate_args=False)
    batch = next(iter(data.make_train_dataset(data.DataConfig("digits", batch_size=16))))
    good, _ = model.dequantize(batch["x"], seed=batch["seed"])  # Float batches, dequantized.
    bad = tf.tensor_scatter_nd_update(good, [[3, 2, 2, 0]], [float("nan")])
    steps, iterator, optimizer = _tiny_steps(
        strategy, model, tf.data.Dataset.from_tensor_slices(tf.concat([bad, good], 0)).batch(16))
    before = [np.array(w.numpy()) for w in model.weights]
    moments = [np.array(v.numpy()) for v in optimizer.variables]
    out = steps.train_step(next(iterator))
    assert not bool(out["applied"]) and not math.isfinite(float(out["nll"]))
    for old, new in zip(before, model.weights):
        np.testing.assert_array_equal(old, new.numpy())  # weights and batch-norm statistics
    for old, new in zip(moments, optimizer.variables):
        np.testing.assert_array_equal(old, new.numpy())  # Adam's moments, iterations
    assert int(optimizer.iterations.numpy()) == 0
    # The decision is made without a tf.cond (FusedAdam.apply_if): its branches would hold
    # every variable and slot (issue 27).
    graph = steps.train_step.get_concrete_function(iterator.element_spec).graph
    assert not {op.type for op in graph.get_operations()} & {"If", "StatelessIf"}
    out = steps.train_step(next(iterator))
    assert bool(out["applied"]) and int(optimizer.iterations.numpy()) == 1
    assert any(not np.array_equal(old, new.numpy()) for old, new in zip(before, model.weights))
    assert steps.train_step.experimental_get_tracing_count() == 1


def test_clipping_scales_the_update_fused_adam_applies():
    """The clipped gradient is what ``FusedAdam.apply_if`` applies (it scales where it masks
    a skipped step).  Adam's first update is ``lr * sqrt(1 - b2) * g / (sqrt(1 - b2) |g| +
    eps)``; with ``eps = 1`` and ``|g|`` far below 1 that is ``lr * sqrt(1 - b2) * g``: its norm
    is the clipping norm times ``sqrt(1e-3)`` (unclipped, about 0.36 here)."""
    strategy = strategy_lib.make_strategy("mirrored")
    with strategy.scope():
        model = tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=0, hidden_channels=8,
                              synchronized_batch_norm=strategy.num_replicas_in_sync > 1)
        optimizer = steps_lib.pre_reduced(tfnvp.FusedAdam)(learning_rate=1.0, epsilon=1.0)
    batch = next(iter(data.make_train_dataset(data.DataConfig("digits", batch_size=16))))
    good, _ = model.dequantize(batch["x"], seed=batch["seed"])
    iterator = iter(strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensors(good)))
    clip = 1e-4
    steps = steps_lib.TrainSteps(model, optimizer, strategy, iterator.element_spec,
                                 global_batch_size=16, clip_grad_norm=clip)
    before = [v.numpy() for v in model.trainable_variables]
    out = steps.train_step(next(iterator))
    assert bool(out["applied"]) and float(out["grad_norm"]) > 100 * clip  # Clipping acts.
    moved = np.sqrt(sum(float(np.sum((v.numpy() - b) ** 2))
                        for v, b in zip(model.trainable_variables, before)))
    assert moved == pytest.approx(clip * np.sqrt(1e-3), rel=1e-3)


# --------------------------------------------------------------- flagfiles
# The five 64x64 paper configurations share one narrow stand-in, and its log_prob traced once:
# an eager call of a 5-scale flow costs as much Python as tracing it, a traced call almost none.
_MODELS: dict = {}


@pytest.mark.parametrize("path", FLAGFILES, ids=[p.stem for p in FLAGFILES])
def test_flagfile_parses_and_builds_pipeline_and_model(path, tmp_path):
    import tensorflow_datasets as tfds

    train.FLAGS.unparse_flags()
    train.FLAGS(train.resolve_flagfiles(["train.py", f"--flagfile={path.name}",
                                         f"--output_dir={tmp_path}"]))
    flags = train.FLAGS
    assert flags.train_steps and flags.train_steps >= 300
    config = train.train_config()
    data_config = train.data_config(flags.dataset, flags.data_dir)
    paper = model_flags.paper_preset_name(flags.dataset, flags.model)
    if paper:  # The flagfile's image shape is its paper preset's.
        spec = model_flags.model_spec(flags, flags.dataset,
                                      tfnvp.models.architectures.spec_class(flags.model).paper(
                                          paper).image_shape, None, None)
    # Flow++'s components (flowpp_cifar.flags: tests/test_train_variational.py).
    flowpp = paper and (spec.dequantization, getattr(spec, "coupling", "affine"),
                        spec.conditioner.attention) != ("uniform", "affine", False)
    # Real NVP's paper settings (glow_cifar.flags: tests/test_train_glow.py).
    if paper and flags.model == "realnvp" and not flowpp:  # The paper's model and training (4.1).
        assert spec.preset_fields() == tfnvp.RealNVPSpec.paper(paper).preset_fields()
        assert (data_config.batch_size, config.learning_rate, config.l2) == (64, 1e-3, 5e-5)
        assert config.clip_grad_norm == 100.0  # the authors' release
        assert data_config.flip == (flags.dataset in PAPER_FLIPS)
    if paper:  # TFDS datasets: mocked (no downloads here).
        with tfds.testing.mock_data(num_examples=4):
            shape = data.image_shape(data_config)
            batch = next(iter(data.make_train_dataset(
                data.DataConfig(flags.dataset, data_dir=str(tmp_path), batch_size=2))))
    else:  # Offline data: the real files (a few held-out images of large folders).
        assert data_config.data_dir is None or Path(data_config.data_dir).exists()
        shape = data.image_shape(data_config)
        data.make_train_dataset(data_config)  # built, not read (decoding 50k JPEGs is slow)
        batch = next(iter(data.make_eval_dataset(
            data.DataConfig(flags.dataset, data_config.data_dir, eval_batch_size=2,
                            max_eval_examples=2))))
    if paper:
        assert tuple(shape) == spec.image_shape
    else:
        spec = model_flags.model_spec(flags, flags.dataset, shape, None, None)
    assert batch["x"].shape[1:] == tuple(shape) and batch["x"].dtype == tf.uint8
    assert batch["seed"].shape[1:] == [2] and batch["seed"].dtype == tf.int64
    # The real model for cifar and the small offline runs; a narrow one of the same
    # shape and scales for the big paper models (only their build time differs).
    if paper and (flags.dataset != "cifar10" or flags.model == "glow" or flowpp):
        narrow = {"num_res_blocks": int(spec.conditioner.attention),  # attention follows a block
                  "steps_per_scale": 1, "mixture_components": 2}
        spec = spec.with_options(hidden_channels=4, attention_heads=2, **{
            key: value for key, value in narrow.items() if key in spec.options()})
    key = json.dumps(tfnvp.models.architectures.stored_config(spec), sort_keys=True)
    if key not in _MODELS:
        built = training.build_model(spec)
        _MODELS[key] = built, tf.function(lambda batch: built.objective(**batch).nll,
                                          reduce_retracing=True)
    model, nll = _MODELS[key]
    assert model.get_config()["num_scales"] == flags.num_scales
    assert np.all(np.isfinite(nll(batch).numpy()))


# -------------------------------------------------------------- errors
def _folder_dataset(root: Path, count: int = 40) -> Path:
    rng = np.random.default_rng(0)
    for split, n in (("train", count), ("test", 8)):
        (root / split).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(
                root / split / f"{i:03d}.png")
    return root


def test_errors_are_clear_and_leave_the_run_untouched(trained_run, tmp_path, capfd):
    images = _folder_dataset(tmp_path / "images")
    run = trained_run
    folder = ["--dataset=image_folder", f"--data_dir={images}", f"--output_dir={run}"]
    assert (run / "checkpoints" / "ckpt-4.index").exists()
    before = _hashes(run)
    capfd.readouterr()

    nan_npz = tmp_path / "nan.npz"
    x = np.zeros((4, 8, 8), np.float32)
    x[1, 2, 3] = np.nan
    np.savez(nan_npz, train=x, test=x)
    (images / "train" / "999_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    cases = {
        "Unknown command line flag 'no_such_flag'": ["--no_such_flag=1"],
        "flag --batch_size=0: must be >= 1": ["--batch_size=0"],
        "--mode=train needs --dataset and --train_steps": ["--dataset=digits", f"--output_dir={run}"],
        "Unknown dataset 'no_such_data'": ["--dataset=no_such_data"],
        "does not exist": ["--dataset=mnist_idx", f"--data_dir={tmp_path / 'missing'}"],
        "contains 1 NaN": ["--dataset=npz", f"--data_dir={nan_npz}"],
        "different model configuration": ["--hidden_channels=16"],
        "999_corrupt.png is not a readable PNG or JPEG file": [*folder],
    }
    for expected, extra in cases.items():
        argv = extra if expected.startswith("--mode") else \
            [*TINY, f"--output_dir={run}", "--train_steps=6", *extra]
        assert _run(*argv) == 1, expected
        err = capfd.readouterr().err
        assert expected in err, (expected, err[-2000:])
        assert "Traceback" not in err
        assert _hashes(run) == before, expected
    assert "999_corrupt.png" in err  # The corrupt file is named.


def test_cli_reports_a_bad_dataset_without_a_traceback(tmp_path):
    """The real entry point, from the repo root, with a bare flagfile name, in a user's
    environment (no TF_CPP_MIN_LOG_LEVEL): the first line printed names the run directory,
    and TensorFlow's start-up lines (absl's InitializeLog notice, oneDNN, CUDA drivers,
    cuInit) are not printed."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "CUDA_VISIBLE_DEVICES")}
    result = subprocess.run(
        [sys.executable, "trainers/train.py", "--flagfile=digits.flags", "--dataset=no_such_data",
         f"--output_dir={tmp_path}"], cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, timeout=300, env=env)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"Run directory: {tmp_path} (new run)", result.stdout[-3000:]
    assert "Error (UsageError): Unknown dataset 'no_such_data'" in result.stdout
    noise = ("InitializeLog", "cuda drivers", "cuInit", "oneDNN custom operations",
             "rebuild TensorFlow", "GeneratorDatasetOp")
    assert not [line for line in lines if any(n in line for n in noise)], result.stdout[-3000:]
    assert "Traceback" not in result.stdout
    assert not (tmp_path / "config.json").exists()


def test_help_lists_the_commands_own_flags_by_group_and_exits_0(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["tfnvp-train", "--help"])
    with pytest.raises(SystemExit) as exited:
        train.console_main()
    assert exited.value.code == 0
    text = capsys.readouterr().out
    source = (REPO / "trainers" / "train.py").read_text()
    defined = re.findall(r'flags\.DEFINE_\w+\("(\w+)"', source) + model_flags.flag_names()
    grouped = [name for names in train.HELP_GROUPS.values() for name in names]
    assert sorted(grouped) == sorted(defined)  # Every flag of the trainer, once.
    headings = [line for line in text.splitlines() if line and not line.startswith(" ")]
    assert [h for h in headings if h.endswith(":")] == [
        "Data:", "Model:", "Training:", "Evaluation:", "Output:"]
    assert "  --batch_size (default: 64)\n      GLOBAL batch size" in text
    assert "  --model=<realnvp|glow> (default: realnvp)\n      Architecture" in text
    assert "  --[no]conditional (default: false)" in text
    assert "  --train_steps (default: unset)" in text
    # The other commands' groups cover their flags (their --help: tests/test_packaging.py).
    for module in (visualize, train_toy):
        values = absl_flags.FlagValues()
        module.define_flags(values)
        help_text = console.help_text("s", "u", module.HELP_GROUPS, values)
        assert sorted(n for names in module.HELP_GROUPS.values() for n in names) == sorted(
            values), module.__name__
        assert all(f"--{name}" in help_text or f"--[no]{name}" in help_text for name in values)


# ------------------------------------------------------- run, eval, export
def test_run_directory_and_resume(trained_run, capfd):
    config = run_dir.read_config(str(trained_run))
    assert config["data"] == {"dataset": "digits", "image_shape": [8, 8, 1],
                              "data_path": "sklearn.datasets.load_digits",
                              "data_fingerprint": data.identity(data.DataConfig("digits"))[
                                  "data_fingerprint"]}
    assert config["data"]["data_fingerprint"].startswith("1500 + 297 images, sha256 ")
    assert config["model"]["synchronized_batch_norm"] is False
    assert sorted(p.name for p in (trained_run / "samples").iterdir()) == ["step_00000004.png"]
    assert {p.name for p in (trained_run / "tensorboard").iterdir()} == {"train", "eval"}
    # TensorBoard itself reads the scalars and the sample grid.
    from tensorboard.backend.event_processing import event_accumulator
    tags = {}
    for split in ("train", "eval"):
        events = event_accumulator.EventAccumulator(str(trained_run / "tensorboard" / split),
                                                    size_guidance={"tensors": 0})
        tags[split] = set(events.Reload().Tags()["tensors"])
    assert {"bits_per_dim", "grad_norm", "learning_rate"} <= tags["train"]
    assert "bits_per_dim" in tags["eval"]
    assert any(tag.startswith("samples_t") for tag in tags["eval"])
    latest = tf.train.latest_checkpoint(str(trained_run / "checkpoints"))
    assert latest.endswith("ckpt-4") and evaluation.checkpoint_step(latest) == 4
    # Resuming to step 6 restores step 4's weights and trains 2 more steps.
    restored = training.weights_fingerprint(run_dir.restore_model(str(trained_run)))
    capfd.readouterr()
    # The run holds its input iterator until the command ends (trainers/process_exit.py);
    # run(), an in-process caller, frees it when the command returns.
    with mock.patch.object(process_exit, "hold", wraps=process_exit.hold) as hold, \
            mock.patch.object(process_exit, "release", wraps=process_exit.release) as release:
        assert _run(*TINY, f"--output_dir={trained_run}", "--train_steps=6") == 0
    [(held,)] = [call.args for call in hold.call_args_list]
    assert isinstance(held, tf.distribute.DistributedIterator)
    release.assert_called_once_with()
    assert evaluation.checkpoint_step(tf.train.latest_checkpoint(
        str(trained_run / "checkpoints"))) == 6
    assert restored != training.weights_fingerprint(run_dir.restore_model(str(trained_run)))


def test_eval_mode_writes_eval_json(trained_run):
    assert _run(f"--output_dir={trained_run}", "--mode=eval") == 0  # dataset from config.json
    report = json.loads((trained_run / "eval.json").read_text())
    latest = tf.train.latest_checkpoint(str(trained_run / "checkpoints"))
    assert report["checkpoint"] == latest
    assert report["step"] == evaluation.checkpoint_step(latest)
    assert report["num_examples"] == 297 and report["dataset"] == "digits"
    assert 0 < report["std_error"] < report["bits_per_dim"] < 20
    # Exact and deterministic: the same number as a direct evaluation of the checkpoint.
    model = run_dir.restore_model(str(trained_run))
    direct = evaluation.Evaluator(model).evaluate(
        data.make_eval_dataset(data.DataConfig("digits", eval_batch_size=100)))
    assert direct.bits_per_dim == pytest.approx(report["bits_per_dim"], rel=1e-6)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_run_files_follow_the_umask(tmp_path, umask):
    """config.json and eval.json (written by run_dir.write_json_atomic) are as readable as
    any new file, not 0600 (tempfile.mkstemp's mode)."""
    previous = os.umask(umask)
    try:
        run_dir.write_json_atomic(str(tmp_path / "config.json"), {"a": 1})
    finally:
        os.umask(previous)
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert json.loads((tmp_path / "config.json").read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_export_mode_writes_a_saved_model(trained_run):
    pytest.importorskip("trainers.export")
    assert _run(f"--output_dir={trained_run}", "--mode=export") == 0
    step = evaluation.checkpoint_step(tf.train.latest_checkpoint(str(trained_run / "checkpoints")))
    assert (trained_run / "saved_model" / str(step) / "saved_model.pb").exists()  # Serving layout
