"""Issue 9: debiased running averages, ``FlowModel.recalibrate``, samples in the support,
and the trainer's recalibration, ``--checkpoint`` and ``--keep_checkpoints``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import digits_runs
import tfnvp
from tfnvp import running_average
from tfnvp.bijectors import BatchNormStatistics
from tfnvp.nets.batch_norm import BatchNormalization
from tfnvp.nets.resnet import ResNet
from tfnvp.nets.shift_and_log_scale import ShiftAndLogScale
from trainers import data, evaluation, run_dir, train

TINY = ["--flagfile=digits.flags", "--num_scales=1", "--num_res_blocks=0", "--hidden_channels=8",
        "--batch_size=16", "--eval_batch_size=300", "--num_sample_images=4", "--log_every=1",
        "--summary_every=2", "--eval_every=1000", "--checkpoint_every=1"]


# ------------------------------------------------------------ running averages
def test_cumulative_mode_pools_equal_batches_exactly():
    stats = BatchNormStatistics(3, dtype="float64")
    rng = np.random.default_rng(0)
    batches = [loc + scale * rng.normal(size=(32, 3))
               for loc, scale in ((0.0, 1.0), (5.0, 0.5), (-2.0, 3.0))]
    for batch in batches:
        running_average.update(stats.moving_mean, stats.moving_variance, stats.num_updates,
                               tf.constant(batch.mean(0)), tf.constant(batch.var(0)), 0.99,
                               cumulative=True)
    everything = np.concatenate(batches)
    np.testing.assert_allclose(stats.moving_mean.numpy(), everything.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.moving_variance.numpy(), everything.var(0), rtol=1e-12)
    assert float(stats.num_updates) == 3.0


@pytest.mark.parametrize("dtype", ["float32", "float64"], ids=["fused", "keras_ops"])
def test_conditioner_batch_norm_is_debiased_from_the_first_update(dtype):
    norm = BatchNormalization(momentum=0.99, dtype=dtype)
    x = 3.0 + 2.0 * tf.random.normal((8, 4, 4, 5), dtype=dtype)
    y = norm(x, training=True)
    xs = x.numpy().reshape(-1, 5)
    assert float(norm.num_updates) == 1.0
    # Without debiasing the mean would be 0.01 * batch mean, the variance 0.99 + 0.01 * var.
    np.testing.assert_allclose(norm.moving_mean.numpy(), xs.mean(0), rtol=1e-5)
    np.testing.assert_allclose(norm.moving_variance.numpy(), xs.var(0), rtol=1e-4)
    np.testing.assert_allclose(norm(x, training=False).numpy(), y.numpy(), atol=1e-4)


def test_recomputed_backward_pass_does_not_count_as_an_update():
    net = ShiftAndLogScale(ResNet(8, 1, 4), channels=2, recompute_gradients=True)
    x = tf.random.normal((4, 4, 4, 2))
    with tf.GradientTape() as tape:
        shift, log_scale = net(x, training=True)
        loss = tf.reduce_sum(shift) + tf.reduce_sum(log_scale)
    grads = tape.gradient(loss, net.trainable_weights)
    assert all(g is not None for g in grads)
    norms = [layer for layer in net._flatten_layers() if isinstance(layer, BatchNormalization)]
    assert len(norms) == 3
    assert [float(norm.num_updates) for norm in norms] == [1.0, 1.0, 1.0]


def test_counters_are_model_state_restored_with_the_statistics():
    model = tfnvp.RealNVP((8, 8, 1), num_scales=2, num_res_blocks=1, hidden_channels=8)
    layers = model.batch_norm_layers()
    bijector_stats = [layer for layer in layers if isinstance(layer, BatchNormStatistics)]
    assert len(bijector_stats) == len(model.statistics)  # one batch norm per coupling
    # 4 per conditioner: the prepared input's (the release's form), 2 in its block, the head's.
    assert len(layers) - len(bijector_stats) == 4 * len(model.statistics)
    state = {id(v) for v in model.non_trainable_variables}  # What a skipped step puts back.
    assert all(id(layer.num_updates) in state for layer in layers)


# ------------------------------------------------------------------ recalibrate
@pytest.fixture(scope="module")
def trained() -> tuple[tfnvp.RealNVP, tf.data.Dataset]:
    """A copy of tests/digits_runs.py's RealNVP (2 scales) after 100 steps on the digits
    (shared with tests/test_training.py and tests/test_conditional.py): the conditioners'
    output gains have left zero, so every batch norm, bijector or conditioner, matters."""
    model = digits_runs.digits_run().model_at(100)
    assert all(np.abs(c.body.conv_out.gain.numpy()).max() > 0 for c in model.conditioners)
    return model, data.make_train_dataset(data.DataConfig("digits", batch_size=64, seed=3))


def test_recalibrating_on_one_batch_reproduces_its_batch_statistics(trained):
    """Each layer's statistics are those of its inputs normalized by the recalibrated
    earlier layers: over a single batch, exactly the training-mode computation."""
    model, batches = trained
    batch = next(iter(batches.skip(100)))  # uint8 images, dequantized from their seeds.
    assert model.recalibrate([batch], 1) == 1
    assert all(float(layer.num_updates) == 1.0 for layer in model.batch_norm_layers())
    x, _ = model.dequantize(batch["x"], seed=batch["seed"])
    evaluated = model.log_prob(x, training=False).numpy()
    with_batch_statistics = model.log_prob(x, training=True).numpy()
    np.testing.assert_allclose(evaluated, with_batch_statistics, rtol=2e-5)


def test_recalibrated_held_out_bits_match_batch_statistics(trained):
    """After a short run, evaluation-mode bits/dim on held-out digits are within
    0.03 bits/dim of the same images' batch-statistics bits/dim."""
    model, batches = trained
    batch = next(iter(data.make_eval_dataset(data.DataConfig("digits", eval_batch_size=300))))
    held_out, _ = model.dequantize(batch["x"], seed=batch["seed"])
    dims = 64

    def bits(training):
        return float(np.mean(tfnvp.bits_per_dim_from_log_prob(
            model.log_prob(held_out, training=training), dims)))

    running = bits(False)
    assert model.recalibrate(batches, 16) == 16
    recalibrated = bits(False)
    batch_statistics = bits(True)  # Updates the statistics: measured last.
    assert math.isfinite(recalibrated)
    print(f"running averages {running:.4f}, recalibrated {recalibrated:.4f}, "
          f"batch statistics {batch_statistics:.4f} bits/dim")
    assert abs(recalibrated - batch_statistics) < 0.03, (recalibrated, batch_statistics)


def test_recalibrate_rejects_bad_arguments(trained):
    model, _ = trained
    with pytest.raises(ValueError, match="num_batches"):
        model.recalibrate([], 0)
    with pytest.raises(ValueError, match="no batch"):
        model.recalibrate([], 3)


# ---------------------------------------------------------------- the support
def test_samples_stay_in_the_support_and_have_a_log_prob():
    model = tfnvp.RealNVP((8, 8, 1), num_scales=2, num_res_blocks=1, hidden_channels=8)
    for stats in model.statistics:  # An early model: wide statistics.
        stats.moving_variance.assign(tf.fill(stats.moving_variance.shape, 9.0))
    z = 1.5 * tf.random.stateless_normal((32, 8, 8, 1), seed=[4, 2])
    raw = model.bijector.forward(z).numpy()
    assert raw.min() < 0.0 and raw.max() >= 256.0  # The flow's own range is the real line.
    x = model.decode(tf.identity(z)).numpy()
    assert x.min() == 0.0 and x.max() == np.nextafter(np.float32(256), np.float32(0))
    inside = (raw >= 0) & (raw < 256)
    np.testing.assert_array_equal(x[inside], raw[inside])
    samples = model.sample(32, temperature=1.5, seed=[4, 2])
    np.testing.assert_array_equal(samples.numpy(), x)
    assert np.all(np.isfinite(model.log_prob(samples).numpy()))


# ------------------------------------------------------------------ trainer
def _run(*args: str) -> int:
    return train.run(["train.py", *args])


def _eval_scalars(run: Path, tag: str) -> dict[int, float]:
    from tensorboard.backend.event_processing import event_accumulator
    events = event_accumulator.EventAccumulator(str(run / "tensorboard" / "eval"),
                                                size_guidance={"tensors": 0}).Reload()
    return {e.step: float(tf.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}


def test_trainer_recalibrates_checkpoints_and_evaluates_chosen_checkpoints(tmp_path):
    run = tmp_path / "run"
    assert _run(*TINY, f"--output_dir={run}", "--train_steps=3", "--recalibration_batches=2",
                "--keep_checkpoints=2", "--running_average_batch_norm") == 0
    assert run_dir.read_config(str(run))["model"]["running_average_batch_norm"] is True
    assert sorted(p.name for p in (run / "checkpoints").glob("*.index")) == [
        "ckpt-2.index", "ckpt-3.index"]
    final, earlier = str(run / "checkpoints" / "ckpt-3"), str(run / "checkpoints" / "ckpt-2")
    assert evaluation.checkpoint_recalibration(final) == 2  # evaluated at the last step
    assert evaluation.checkpoint_recalibration(earlier) == 0
    assert _eval_scalars(run, "batch_norm_recalibration_batches") == {3: 2.0}

    # The final checkpoint's statistics are used as they are.
    assert _run(f"--output_dir={run}", "--mode=eval") == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["checkpoint"] == final and report["recalibration_batches"] == 2
    assert report["batch_norm_statistics"] == "recalibrated over 2 training batches"
    # A chosen checkpoint holding running averages is recalibrated first, or not with 0.
    for batches, statistics in ((3, "recalibrated over 3 training batches"),
                                (0, "running averages (debiased)")):
        assert _run(f"--output_dir={run}", "--mode=eval", f"--checkpoint={earlier}",
                    f"--recalibration_batches={batches}") == 0
        report = json.loads((run / "eval.json").read_text())
        assert (report["step"], report["batch_norm_statistics"]) == (2, statistics)
    assert _run(f"--output_dir={run}", "--mode=eval", f"--checkpoint={run}/nope") == 1
