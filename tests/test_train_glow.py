"""trainers/train.py with --model=glow: a tiny digits run (with Flow++'s attention, gated
convolutions and dropout in its coupling networks) trains, evaluates and exports, and its run
directory restores as a Glow model; glow_cifar.flags is the Glow paper's model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import tfnvp
from trainers import data, evaluation, run_dir, train, visualize

from trainer_flags import trainer_spec

# Two replicas here (tests/conftest.py): the actnorms initialize from the global batch.
TINY_GLOW = ["--dataset=digits", "--model=glow", "--num_scales=2", "--steps_per_scale=1",
             "--hidden_channels=8", "--batch_size=16", "--eval_batch_size=300",
             "--num_sample_images=4", "--log_every=1", "--summary_every=2", "--eval_every=1000",
             "--checkpoint_every=2", "--learning_rate=1e-3"]
# Flow++'s conditioner options (plain Glow runs: tests/test_load_run.py).
FLOWPP = ["--attention", "--attention_heads=2", "--gated_convolutions", "--dropout=0.2"]


def _run(*args: str) -> int:
    return train.run(["train.py", *args])


def test_glow_digits_run_trains_evaluates_and_exports(tmp_path):
    run = tmp_path / "glow"
    assert _run(*TINY_GLOW, *FLOWPP, f"--output_dir={run}", "--train_steps=3") == 0
    stored = json.loads((run / "config.json").read_text())["model"]
    assert stored[run_dir.ARCHITECTURE_KEY] == "glow"
    assert (stored["num_scales"], stored["steps_per_scale"], stored["hidden_channels"]) == (2, 1, 8)
    flowpp = {"attention": True, "attention_heads": 2, "attention_min_depth": 1,
              "gated_convolutions": True, "dropout": 0.2}
    assert {k: stored[k] for k in flowpp} == flowpp
    assert (stored["split_prior"], stored["learn_top"]) == (True, True)  # The release's, default.

    # The run restores as a Glow, its actnorms initialized from data (checkpointed).
    model = run_dir.restore_model(str(run))
    assert isinstance(model, tfnvp.Glow)
    assert all(float(a.initialized.numpy()) == 1.0 for a in model.actnorms)
    # The learned priors were trained: their zero-initialized biases moved.
    assert [head.kind for head in model.priors] == ["split", "top"]
    assert all(np.abs(head.net.bias.numpy()).max() > 0 for head in model.priors)
    assert all(c.body.gated_attention is not None and c.body.gated and c.body.drop.rate == 0.2
               for c in model.conditioners)
    assert tfnvp.load_run(run).get_config() == model.get_config()
    assert evaluation.checkpoint_step(tf.train.latest_checkpoint(str(run / "checkpoints"))) == 3

    assert _run(f"--output_dir={run}", "--mode=eval") == 0
    report = json.loads((run / "eval.json").read_text())
    assert report["num_examples"] == 297 and report["step"] == 3
    assert report["recalibration_batches"] == 0  # No batch norm: nothing to recalibrate.
    assert report["batch_norm_statistics"] == "none (the model has no batch norm)"
    assert 0 < report["std_error"] < report["bits_per_dim"] < 20
    direct = evaluation.Evaluator(model).evaluate(
        data.make_eval_dataset(data.DataConfig("digits", eval_batch_size=100)))
    assert direct.bits_per_dim == pytest.approx(report["bits_per_dim"], rel=1e-6)

    assert _run(f"--output_dir={run}", "--mode=export") == 0
    exported = run / "saved_model" / "3"
    adapter = visualize.SavedModelAdapter(str(exported))
    assert adapter.metadata["model_config"][run_dir.ARCHITECTURE_KEY] == "glow"
    assert {k: adapter.metadata["model_config"][k] for k in flowpp} == flowpp
    assert adapter.metadata["weights"] == report["weights"] == "training weights"
    np.testing.assert_array_equal(adapter.latent_scale_index(), model.latent_scale_index())
    x = tf.random.uniform((2, 8, 8, 1), 0.0, 256.0, seed=1)
    loaded = tf.saved_model.load(str(exported))
    np.testing.assert_allclose(loaded.log_prob(x).numpy(), model.log_prob(x).numpy(), rtol=1e-5)

    # Resuming the Glow run as Real NVP is refused; the run is untouched.
    assert _run("--flagfile=digits.flags", f"--output_dir={run}", "--train_steps=4") == 1
    assert evaluation.checkpoint_step(tf.train.latest_checkpoint(str(run / "checkpoints"))) == 3


def test_glow_with_the_additive_coupling_trains_a_step(tmp_path):
    """--model=glow --coupling=additive (the release's flow_coupling=0): the run records the
    option and restores the additive couplings."""
    run = tmp_path / "additive"
    assert _run(*TINY_GLOW, "--coupling=additive", f"--output_dir={run}", "--train_steps=1",
                "--checkpoint_every=1", "--num_sample_images=0") == 0
    assert json.loads((run / "config.json").read_text())["model"]["coupling"] == "additive"
    model = tfnvp.load_run(run)
    assert model.spec.coupling == "additive"
    assert all(type(head).__name__ == "GlowAdditiveHead" for head in model.conditioners)
    # Real NVP's couplings are not Glow's: a clear error, nothing written.
    assert _run(*TINY_GLOW, "--coupling=logistic_mixture", f"--output_dir={tmp_path / 'no'}",
                "--train_steps=1") == 1
    assert not (tmp_path / "no").exists()


def test_glow_with_the_release_class_conditioning_and_adamax_trains(tmp_path):
    """--conditional --class_conditioning=release --weight_y (the release's --ycond and
    --weight_y) with --optimizer=adamax: the run records them, the label embedding and the
    classifier train (their zero-initialized weights move), eval reports the likelihood's
    bits/dim and the run restores as that model."""
    run = tmp_path / "release"
    assert _run(*TINY_GLOW, "--conditional", "--class_conditioning=release", "--weight_y=0.01",
                "--optimizer=adamax", "--adamax_beta2=0.99", f"--output_dir={run}",
                "--train_steps=2", "--num_sample_images=0") == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["model"]["class_conditioning"], config["model"]["weight_y"]) == ("release", 0.01)
    assert config["model"]["num_classes"] == 10
    assert config["training"]["optimizer"] == "adamax"
    model = tfnvp.load_run(run)
    assert model.spec.release_labels and not hasattr(model, "prior")
    top = model.priors[-1]
    assert np.abs(top.label_embedding.kernel.numpy()).max() > 0
    assert np.abs(model.classifier.kernel.numpy()).max() > 0
    assert all(c.body.context_bias is None for c in model.conditioners)  # Labels: top prior only.
    assert _run(f"--output_dir={run}", "--mode=eval") == 0
    report = json.loads((run / "eval.json").read_text())
    assert 0 < report["bits_per_dim"] < 20 and report["num_examples"] == 297


def test_glow_cifar_flagfile_is_the_glow_papers_model(tmp_path):
    train.FLAGS.unparse_flags()
    train.FLAGS(train.resolve_flagfiles(["train.py", "--flagfile=glow_cifar.flags",
                                         f"--output_dir={tmp_path}"]))
    config = train.train_config()
    spec = trainer_spec("--flagfile=glow_cifar.flags", dataset="cifar10", shape=(32, 32, 3))
    assert spec == tfnvp.GlowSpec.cifar10()  # 3 levels, K = 32, 512 channels.
    assert (spec.num_scales, spec.steps_per_scale, spec.hidden_channels) == (3, 32, 512)
    assert (config.learning_rate, config.l2, config.clip_grad_norm) == (1e-3, 0.0, None)
    assert config.warmup_steps == 7813  # The release: 10 epochs of 50,000 images at batch 64.
    # The release's default optimizer: its Adamax, beta2 = 1 - 1 / (steps per epoch).
    assert config.optimizer == "adamax"
    assert config.adamax_beta2 == pytest.approx(1 - 1 / 782, abs=1e-6)
    # Without the flags, --model=glow takes the Glow paper's configuration for CIFAR-10.
    defaults = trainer_spec("--model=glow", dataset="cifar10", shape=(32, 32, 3))
    assert defaults == tfnvp.GlowSpec.cifar10()
    with pytest.raises(tfnvp.UsageError, match="--model=glow --dataset=digits needs "
                                               "--hidden_channels, --steps_per_scale "):
        trainer_spec("--model=glow", "--num_scales=2")
