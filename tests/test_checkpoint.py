"""tf.train.Checkpoint(model=...) saves and restores every weight of tfnvp's models."""

import numpy as np
import pytest
import tensorflow as tf

import tfnvp

from bijector_checks import perturb_weights


def _models():
    image = lambda: tfnvp.RealNVP((8, 8, 1), num_scales=2, num_res_blocks=2, hidden_channels=4)  # noqa: E731
    dense = lambda: tfnvp.DenseRealNVP(dim=4, hidden_dim=8, depth=2, num_couplings=3,  # noqa: E731
                                       batch_norm=True)
    return [image, dense]


@pytest.mark.parametrize("make", _models(), ids=["RealNVP", "DenseRealNVP"])
def test_every_weight_round_trips_through_a_checkpoint(make, tmp_path):
    saved = make()
    perturb_weights(saved.conditioners + saved.statistics, scale=0.3, seed=1)
    path = tf.train.Checkpoint(model=saved).save(str(tmp_path / "ckpt"))
    stored = [name for name, _ in tf.train.list_variables(path) if name.startswith("model/")]
    assert len(stored) == len(saved.weights)

    restored = make()
    assert any(np.abs(a.numpy() - b.numpy()).max() > 0 for a, b in zip(saved.weights, restored.weights))
    tf.train.Checkpoint(model=restored).restore(path).assert_existing_objects_matched()
    for a, b in zip(saved.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    small = tfnvp.RealNVP((8, 8, 1), num_scales=2, num_res_blocks=1, hidden_channels=4)
    path = tf.train.Checkpoint(model=small).save(str(tmp_path / "ckpt"))
    wider = tfnvp.RealNVP((8, 8, 1), num_scales=2, num_res_blocks=1, hidden_channels=8)
    with pytest.raises((ValueError, tf.errors.InvalidArgumentError), match="shape"):
        tf.train.Checkpoint(model=wider).restore(path).assert_existing_objects_matched()
