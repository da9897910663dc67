"""FusedAdam: Keras' Adam, one fused kernel per variable."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnvp import FusedAdam
from trainers.steps import pre_reduced

_STEPS = 6
_LR = 0.1


def _initial():
    return [np.linspace(-1.0, 1.0, 6).reshape(2, 3), np.array([0.5, -2.0])]


def _gradient(value, step):
    return np.sin(value * (step + 1.0)) + 0.1 * step


def _reference(amsgrad: bool = False):
    """Adam (Kingma & Ba, Algorithm 1, Keras' epsilon placement) in float64."""
    values = _initial()
    m = [np.zeros_like(v) for v in values]
    v = [np.zeros_like(v) for v in values]
    v_max = [np.zeros_like(v) for v in values]
    for step in range(_STEPS):
        t = step + 1
        alpha = _LR * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        for k, value in enumerate(values):
            g = _gradient(value, step)
            m[k] = 0.9 * m[k] + 0.1 * g
            v[k] = 0.999 * v[k] + 0.001 * g * g
            v_max[k] = np.maximum(v_max[k], v[k])
            values[k] = value - alpha * m[k] / (np.sqrt(v_max[k] if amsgrad else v[k]) + 1e-7)
    return values


def _train(optimizer_class, strategy, amsgrad: bool = False):
    with strategy.scope():
        variables = [keras.Variable(v.astype(np.float32)) for v in _initial()]
        optimizer = optimizer_class(learning_rate=_LR, amsgrad=amsgrad)
        optimizer.build(variables)

    @tf.function
    def step(i):
        def replica():
            grads = [tf.sin(v.value * tf.cast(i + 1, tf.float32)) + 0.1 * tf.cast(i, tf.float32)
                     for v in variables]
            optimizer.apply(grads, variables)
        strategy.run(replica)

    for i in range(_STEPS):
        step(tf.constant(i))
    return variables, optimizer, step.get_concrete_function(tf.constant(0)).graph


@pytest.mark.parametrize("replicas", [1, 2])
def test_matches_float64_adam(replicas):
    """Each replica applies its (identical) gradient to its copy; the pre-reduced
    optimizer must not sum them across replicas."""
    strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if replicas == 2
                else tf.distribute.get_strategy())
    optimizer_class = pre_reduced(FusedAdam) if replicas == 2 else FusedAdam
    variables, optimizer, _ = _train(optimizer_class, strategy)
    for variable, expected in zip(variables, _reference()):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=0, atol=2e-6)
    assert int(optimizer.iterations.numpy()) == _STEPS


def test_amsgrad_is_keras_update():
    variables, _, _ = _train(FusedAdam, tf.distribute.get_strategy(), amsgrad=True)
    for variable, expected in zip(variables, _reference(amsgrad=True)):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=0, atol=2e-5)


def test_one_fused_op_per_variable_and_no_per_variable_arithmetic():
    """The update graph grows by a handful of nodes per variable, not Keras' ~36."""
    _, _, fused_graph = _train(FusedAdam, tf.distribute.get_strategy())
    _, _, keras_graph = _train(keras.optimizers.Adam, tf.distribute.get_strategy())
    fused_ops = [op.type for op in fused_graph.get_operations()]
    assert fused_ops.count("ResourceApplyAdam") == 2
    assert fused_ops.count("Pow") == 2  # beta_1^t, beta_2^t: once per step.
    assert len(fused_ops) < len(keras_graph.get_operations()) / 2


@pytest.mark.parametrize("save_with,restore_with", [(FusedAdam, keras.optimizers.Adam),
                                                    (keras.optimizers.Adam, FusedAdam)])
def test_checkpoints_interchange_with_keras_adam(tmp_path, save_with, restore_with):
    strategy = tf.distribute.get_strategy()
    variables, optimizer, _ = _train(save_with, strategy)
    path = tf.train.Checkpoint(variables=variables, optimizer=optimizer).write(
        str(tmp_path / "ckpt"))
    restored = [keras.Variable(np.zeros_like(v.numpy())) for v in variables]
    other = restore_with(learning_rate=_LR)
    other.build(restored)
    tf.train.Checkpoint(variables=restored, optimizer=other).read(path).assert_consumed()
    assert int(other.iterations.numpy()) == _STEPS
    for a, b in zip(optimizer.variables, other.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert restore_with.from_config(optimizer.get_config()).get_config() == (
        optimizer.get_config())


def _state(variables, optimizer) -> list[np.ndarray]:
    return [v.numpy() for v in variables] + [v.numpy() for v in optimizer.variables]


@pytest.mark.parametrize("replicas", [1, 2])
@pytest.mark.parametrize("use_ema", [False, True])
@pytest.mark.parametrize("grad_scale", [None, 0.37])
def test_apply_if_applies_exactly_or_changes_nothing(replicas, use_ema, grad_scale):
    """``apply_if(True)`` is ``apply`` bit for bit (weights, moments, Polyak averages,
    iterations), with ``grad_scale`` ``apply`` of the scaled gradients (the trainer's
    clipping); ``apply_if(False)`` with non-finite gradients changes no value, also
    on the first step (the averages' ``mu = 0`` update) and between applied steps."""
    strategy = (tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if replicas == 2
                else tf.distribute.get_strategy())
    optimizer_class = pre_reduced(FusedAdam) if replicas == 2 else FusedAdam
    runs = []
    for masked in (False, True):
        with strategy.scope():
            variables = [keras.Variable(v.astype(np.float32)) for v in _initial()]
            optimizer = optimizer_class(learning_rate=_LR, use_ema=use_ema, ema_momentum=0.9)
            optimizer.build(variables)

        @tf.function(autograph=False)
        def step(i, applies):
            def replica():
                grads = [tf.sin(v.value * tf.cast(i + 1, tf.float32)) for v in variables]
                scale = None if grad_scale is None else tf.constant(grad_scale)
                if not masked:
                    optimizer.apply(grads if scale is None else [g * scale for g in grads],
                                    variables)
                    return
                grads = [tf.where(applies, g, float("nan")) for g in grads]
                optimizer.apply_if(applies, grads, variables, grad_scale=scale)
            strategy.run(replica)

        states = []
        for i, applies in enumerate([False, True, False, True, True]):
            if masked or applies:
                step(tf.constant(i), tf.constant(applies))
            states.append((applies, _state(variables, optimizer)))
        runs.append(states)
        assert int(optimizer.iterations.numpy()) == 3
    (plain, masked_run) = runs
    for (applies, expected), (_, got) in zip(plain, masked_run):
        for e, g in zip(expected, got):
            np.testing.assert_array_equal(e, g)  # Skipped steps: as if never called.
    assert not np.array_equal(masked_run[1][1][0], masked_run[0][1][0])  # Steps do move.


def test_apply_if_refuses_amsgrad():
    variables = [keras.Variable(v.astype(np.float32)) for v in _initial()]
    optimizer = FusedAdam(learning_rate=_LR, amsgrad=True)
    optimizer.build(variables)
    with pytest.raises(ValueError, match="amsgrad=False"):
        optimizer.apply_if(tf.constant(True), [tf.zeros_like(v.value) for v in variables],
                           variables)
