"""``tfnvp.graph_optimization``: tfnvp's own compiled functions get one round of Grappler's
passes (and no GPU passes on a host without GPU), compute the same numbers, and leave a
user's functions and TensorFlow's settings as they were."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.eager import context

import tfnvp
from tfnvp import graph_optimization

SHAPE = (8, 8, 1)


def _rewrites_of(config_proto: bytes):
    return tf.compat.v1.ConfigProto.FromString(config_proto).graph_options.rewrite_options


def _nested_call_configs(graph: tf.Graph) -> list:
    """The ``RewriterConfig`` each call of a not-inlined function in ``graph`` passes on
    (the shared conditioner bodies: ``tfnvp.nets.shared_body``)."""
    return [_rewrites_of(op.get_attr("config_proto")) for op in graph.get_operations()
            if op.type in ("PartitionedCall", "StatefulPartitionedCall")]


def test_the_models_compiled_calls_pass_the_rewrites_and_user_functions_keep_defaults():
    model = tfnvp.RealNVP(SHAPE, num_scales=1, num_res_blocks=1, hidden_channels=4)
    x = tf.random.stateless_uniform((3,) + SHAPE, (1, 2), 0.0, 256.0)
    model.log_prob(x)
    [compiled] = model.compiled_functions()["log_prob"]
    configs = _nested_call_configs(compiled.get_concrete_function().graph)
    assert configs, "no shared body call in the compiled log_prob"
    expected = graph_optimization.rewrites()
    assert expected["meta_optimizer_iterations"] == "ONE"
    for rewrites in configs:
        assert rewrites.meta_optimizer_iterations == rewrites.ONE
        assert rewrites.disable_tfg_optimizer
        if not tf.config.list_physical_devices("GPU"):
            assert rewrites.memory_optimization == rewrites.NO_MEM_OPT
            assert rewrites.layout_optimizer == rewrites.OFF

    @tf.function(autograph=False)
    def user_log_prob(x):
        return model.log_prob(x)

    for rewrites in _nested_call_configs(user_log_prob.get_concrete_function(x).graph):
        assert rewrites.meta_optimizer_iterations == rewrites.DEFAULT_NUM_ITERS
        assert not rewrites.disable_tfg_optimizer
    # The same numbers either way (one round of passes or two): float64, to 1e-10.
    model64 = tfnvp.RealNVP(SHAPE, num_scales=1, num_res_blocks=1, hidden_channels=4,
                            dtype="float64")
    rng = np.random.default_rng(0)
    for v in model64.trainable_variables:
        v.assign(v + 0.05 * rng.standard_normal(v.shape))
    x64 = tf.cast(x, tf.float64)
    np.testing.assert_allclose(model64.log_prob(tf.identity(x64)).numpy(),
                               tf.function(model64.log_prob, autograph=False)(x64).numpy(),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("layout_optimizer", [None, False, True])
def test_the_context_sets_this_threads_call_options_and_restores_them(layout_optimizer):
    ctx = context.context()
    # Other settings of the process (one the rewrites also set, on a host without GPU).
    tf.config.optimizer.set_experimental_options({"layout_optimizer": layout_optimizer})
    before = ctx.function_call_options
    assert _rewrites_of(before.config_proto_serialized).meta_optimizer_iterations == 0
    with graph_optimization.first_call_rewrites():
        inside = ctx.function_call_options
        with graph_optimization.first_call_rewrites():  # Nested: the same options object.
            assert ctx.function_call_options is inside
        assert ctx.function_call_options is inside
        assert _rewrites_of(inside.config_proto_serialized).meta_optimizer_iterations == 1
        assert inside.executor_type == before.executor_type
    assert ctx.function_call_options is before
    tf.config.optimizer.set_experimental_options({"layout_optimizer": None})
    # Settings changed inside the context are kept (TensorFlow rebuilds the call options).
    with graph_optimization.first_call_rewrites():
        tf.config.optimizer.set_experimental_options({"constant_folding": True})
    after = ctx.function_call_options
    assert after is not before and after is not inside
    assert _rewrites_of(after.config_proto_serialized).meta_optimizer_iterations == 0
    tf.config.optimizer.set_experimental_options({"constant_folding": None})
