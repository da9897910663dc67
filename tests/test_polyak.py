"""Polyak averaging (--polyak_decay, trainers/polyak.py): the exponential moving average of
the weights, what uses it (evaluation, samples, recalibration, eval, export, load_run), its
checkpointing and resumption, skipped steps, and flag errors.  Tiny models on the digits."""

from __future__ import annotations

import json
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import tfnvp
from trainers import data, evaluation, polyak, train, training
from trainers import steps as steps_lib
from trainers import strategy as strategy_lib

DECAY = 0.5  # Far from 1, so that one step moves the average visibly away from the weights.
TINY = ["--flagfile=digits.flags", "--num_scales=1", "--num_res_blocks=0", "--hidden_channels=8",
        "--batch_size=16", "--eval_batch_size=300", "--max_eval_examples=64",
        "--num_sample_images=4", "--log_every=1", "--summary_every=1000", "--eval_every=2",
        "--checkpoint_every=1", "--keep_checkpoints=10", "--recalibration_batches=2",
        "--strategy=one_device"]  # Replicas: test_skipped_step_..._covers_every_replica.


def _run(*args: str) -> int:
    return train.run(["train.py", *args])


_MODELS: dict = {}  # One model per run directory, restored from each checkpoint in turn.


def _weights(run: Path, step: int, averaged: bool) -> list[np.ndarray]:
    """The trainable weights of checkpoint ``step``: raw, or its Polyak averages as
    ``tfnvp.load_run`` gives them (``restore_polyak_averages``)."""
    if run not in _MODELS:
        _MODELS[run] = tfnvp.io.runs.build_model(tfnvp.io.runs.read_config(str(run)))
    model = _MODELS[run]
    path = str(run / "checkpoints" / f"ckpt-{step}")
    status = tf.train.Checkpoint(model=model).restore(path)
    status.expect_partial().assert_existing_objects_matched()
    if averaged:
        assert tfnvp.io.runs.restore_polyak_averages(model, path) == DECAY
    return [v.numpy() for v in model.trainable_variables]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A Polyak run of 3 steps resumed to 4 (evaluations at steps 2, 3 and 4, checkpoints
    at every step), and the same 3 steps without averaging (nor evaluations before the last)."""
    root = tmp_path_factory.mktemp("polyak")
    averaged, plain = root / "averaged", root / "plain"
    results = {}
    assert _run(*TINY, f"--output_dir={averaged}", "--train_steps=3",
                f"--polyak_decay={DECAY}") == 0
    for flags in ([f"--output_dir={averaged}", "--train_steps=4", f"--polyak_decay={DECAY}"],
                  [f"--output_dir={plain}", "--train_steps=3", "--eval_every=1000",
                   "--num_sample_images=0", "--recalibration_batches=0"]):
        train.FLAGS.unparse_flags()
        train.FLAGS(train.resolve_flagfiles(["train.py", *TINY, *flags]))
        results[flags[0]] = train.execute()
    return dict(averaged=averaged, plain=plain, resumed=results[f"--output_dir={averaged}"])


# ------------------------------------------------------------ the average itself
def test_average_follows_the_ema_formula_across_a_resumption(runs):
    run = runs["averaged"]
    raw = {t: _weights(run, t, averaged=False) for t in (1, 2, 3, 4)}
    average = {t: _weights(run, t, averaged=True) for t in (1, 2, 3, 4)}
    # Keras starts the average at the first update's weights: a_1 = w_1.
    for a, w in zip(average[1], raw[1]):
        np.testing.assert_array_equal(a, w)
    # a_t = d a_{t-1} + (1 - d) w_t; step 4 ran in a resumed process (from ckpt-3).
    for t in (2, 3, 4):
        moved = 0.0
        for a, previous, w in zip(average[t], average[t - 1], raw[t]):
            np.testing.assert_allclose(a, DECAY * previous + (1 - DECAY) * w, rtol=1e-6,
                                       atol=1e-7)
            moved = max(moved, float(np.abs(a - w).max()))
        assert moved > 1e-5  # The average is not the weights.
    for t in (1, 4):
        path = str(run / "checkpoints" / f"ckpt-{t}")
        assert tfnvp.io.runs.checkpoint_polyak_decay(path) == DECAY
    config = json.loads((run / "config.json").read_text())
    assert config["training"]["polyak_decay"] == DECAY


def test_training_goes_on_from_the_raw_weights(runs):
    """Evaluations (with recalibration) at steps 2 and 3 swapped the averages in and out:
    the raw trajectory is the one of the same run without averaging or evaluations."""
    for step in (2, 3):
        for ours, plain in zip(_weights(runs["averaged"], step, averaged=False),
                               _weights(runs["plain"], step, averaged=False)):
            np.testing.assert_array_equal(ours, plain)
    plain_path = str(runs["plain"] / "checkpoints" / "ckpt-3")
    assert tfnvp.io.runs.checkpoint_polyak_decay(plain_path) == 0.0
    assert tf.train.load_checkpoint(plain_path).has_tensor(
        "polyak_decay/.ATTRIBUTES/VARIABLE_VALUE") is False


# ------------------------------------------------------- what uses the average
EVAL_DATA = data.DataConfig("digits", eval_batch_size=300, max_eval_examples=64)


def test_periodic_evaluation_and_sample_grid_use_the_averaged_weights(runs):
    report = runs["resumed"]["eval"]  # Step 4, after the resumption.
    assert report["weights"] == f"Polyak-averaged weights (decay {DECAY:g})"
    bits = {}
    for averaged in (True, False):
        model = tfnvp.load_run(runs["averaged"], 4, averaged=averaged)
        dataset = data.make_eval_dataset(EVAL_DATA)
        bits[averaged] = evaluation.Evaluator(model).evaluate(dataset).bits_per_dim
        if averaged:
            grid = runs["averaged"] / "reproduced.png"
            evaluation.Sampler(model, 4, temperature=0.8, seed=0).save_grid(str(grid))
            saved = np.asarray(Image.open(evaluation.sample_grid_path(str(runs["averaged"]), 4)))
            np.testing.assert_array_equal(np.asarray(Image.open(grid)), saved)
    assert report["bits_per_dim"] == pytest.approx(bits[True], rel=1e-6)
    assert abs(bits[True] - bits[False]) > 1e-5


def test_eval_and_export_use_the_averaged_weights(runs):
    run = runs["averaged"]
    assert _run(f"--output_dir={run}", "--mode=eval") == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["weights"] == f"Polyak-averaged weights (decay {DECAY:g})"
    assert report["step"] == 4 and report["recalibration_batches"] == 2
    model = tfnvp.load_run(run)
    dataset = data.make_eval_dataset(
        data.DataConfig("digits", eval_batch_size=300, max_eval_examples=None))
    assert report["bits_per_dim"] == pytest.approx(
        evaluation.Evaluator(model).evaluate(dataset).bits_per_dim, rel=1e-6)

    assert _run(f"--output_dir={run}", "--mode=export") == 0
    # The export's metadata names its weights, in the words of the log and eval.json.
    metadata = json.loads((run / "saved_model" / "4" / "assets" / "tfnvp_export.json").read_text())
    assert metadata["weights"] == report["weights"]
    loaded = tf.saved_model.load(str(run / "saved_model" / "4"))
    assert json.loads(Path(loaded.metadata.asset_path.numpy().decode()).read_text()) == metadata
    x = tf.random.stateless_uniform([8, 8, 8, 1], [1, 2], 0.0, 256.0)
    exported = loaded.log_prob(x).numpy()
    np.testing.assert_allclose(exported, model.log_prob(tf.identity(x)).numpy(), rtol=1e-5)
    raw = tfnvp.load_run(run, averaged=False).log_prob(tf.identity(x)).numpy()
    assert np.abs(raw - exported).max() > 1e-3


def test_polyak_cannot_be_turned_off_when_resuming(runs, capsys):
    run = runs["averaged"]
    before = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert _run(*TINY, f"--output_dir={run}", "--train_steps=5") == 1
    assert "cannot turn it off when resuming" in capsys.readouterr().err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before


# ------------------------------------------------------------ skipped steps
def _tiny_model(strategy: tf.distribute.Strategy) -> tfnvp.RealNVP:
    with strategy.scope():
        return tfnvp.RealNVP((8, 8, 1), num_scales=1, num_res_blocks=0, hidden_channels=8,
                             synchronized_batch_norm=strategy.num_replicas_in_sync > 1,
                             validate_args=False)


def _values(variables) -> list[np.ndarray]:
    return [v.numpy() for v in variables]


def test_skipped_step_leaves_the_average_alone():
    strategy = strategy_lib.make_strategy("one_device")
    model = _tiny_model(strategy)
    with strategy.scope():
        optimizer = steps_lib.make_optimizer(1e-2, polyak_decay=DECAY)
    batch = next(iter(data.make_train_dataset(data.DataConfig("digits", batch_size=16))))
    good, _ = model.dequantize(batch["x"], seed=batch["seed"])  # Float batches, dequantized.
    bad = tf.tensor_scatter_nd_update(good, [[3, 2, 2, 0]], [float("nan")])
    batches = tf.data.Dataset.from_tensor_slices(tf.concat([good, bad, good], 0)).batch(16)
    iterator = iter(strategy.experimental_distribute_dataset(batches))
    steps = steps_lib.TrainSteps(model, optimizer, strategy, iterator.element_spec,
                                 global_batch_size=16)
    averages = polyak.averages_of(optimizer)
    assert len(averages) == len(model.trainable_variables)

    assert bool(steps.train_step(next(iterator))["applied"])
    after_first = _values(averages)
    assert not bool(steps.train_step(next(iterator))["applied"])
    for old, new in zip(after_first, _values(averages)):
        np.testing.assert_array_equal(old, new)
    assert bool(steps.train_step(next(iterator))["applied"])
    for a, previous, w in zip(_values(averages), after_first, _values(model.trainable_variables)):
        np.testing.assert_allclose(a, DECAY * previous + (1 - DECAY) * w, rtol=1e-6, atol=1e-7)
        assert not np.array_equal(a, previous)


def test_averaged_weights_swap_every_replica_in_and_back():
    strategy = strategy_lib.make_strategy("mirrored")  # 2 replicas under tests/conftest.py
    assert strategy.num_replicas_in_sync == 2
    model = _tiny_model(strategy)
    with strategy.scope():
        optimizer = steps_lib.make_optimizer(1e-3, polyak_decay=0.9)
        optimizer.build(model.trainable_variables)
    swap = polyak.AveragedWeights(model.trainable_variables, optimizer, strategy, 0.9)
    swap.initialize()
    raw = _values(model.trainable_variables)
    for average, value in zip(swap.averages, raw):
        np.testing.assert_array_equal(average.numpy(), value)
    with strategy.scope():
        for average in swap.averages:
            average.assign(tf.random.normal(average.shape))
    expected = _values(swap.averages)

    def replicas(variables):
        return [[c.numpy() for c in strategy.experimental_local_results(v.value)]
                for v in variables]

    with swap():
        for copies, average in zip(replicas(model.trainable_variables), expected):
            assert len(copies) == 2
            for copy in copies:
                np.testing.assert_array_equal(copy, average)
    for copies, value in zip(replicas(model.trainable_variables), raw):
        for copy in copies:
            np.testing.assert_array_equal(copy, value)
    assert swap.description == "Polyak-averaged weights (decay 0.9)"


def test_loss_scaled_optimizer_keeps_the_averages_of_its_inner_optimizer():
    weights = [tf.Variable([1.0, -2.0]), tf.Variable([[0.5]])]
    optimizer = steps_lib.make_optimizer(1e-3, "float16", polyak_decay=0.9)
    optimizer.build(weights)
    assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    assert [tuple(a.shape) for a in polyak.averages_of(optimizer)] == [(2,), (1, 1)]
    assert polyak.averages_of(steps_lib.make_optimizer(1e-3)) == []


# ------------------------------------------------------------------ flags
@pytest.mark.parametrize("value", ["1", "1.5", "-0.1"])
def test_polyak_decay_outside_0_1_is_a_flag_error(value, tmp_path, capsys):
    assert _run(*TINY, f"--output_dir={tmp_path / 'run'}", "--train_steps=1",
                f"--polyak_decay={value}") == 1
    err = capsys.readouterr().err
    assert "--polyak_decay" in err and "must be in [0, 1)" in err
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"polyak_decay must be in \[0, 1\)"):
        steps_lib.make_optimizer(1e-3, polyak_decay=float(value))
    with pytest.raises(ValueError, match=r"polyak_decay must be in \[0, 1\)"):
        training.TrainConfig(output_dir=str(tmp_path), train_steps=1, polyak_decay=float(value))


@pytest.mark.parametrize("flagfile, decay", [("flowpp_cifar.flags", 0.999),
                                             ("glow_cifar.flags", 0.0)])
def test_flagfiles_polyak_settings(flagfile, decay, tmp_path):
    train.FLAGS.unparse_flags()
    train.FLAGS(train.resolve_flagfiles(["train.py", f"--flagfile={flagfile}",
                                         f"--output_dir={tmp_path}"]))
    assert train.train_config().polyak_decay == decay
    train.FLAGS.unparse_flags()
