"""``tfnvp.graph_optimization``: tfnvp's own compiled functions get one round of Grappler's
passes (and no GPU passes on a host without GPU), compute the same numbers, and leave a
user's functions and TensorFlow's settings as they were."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.eager import context

import tfnvp
from tfnvp import _compat, graph_optimization
from trainers import steps as steps_lib
from trainers import strategy as strategy_lib

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


def _stacks_recorded_ops(ops) -> set[bool]:
    return {op.traceback is not None for op in ops}


def _stacks_recorded(graph: tf.Graph) -> set[bool]:
    return _stacks_recorded_ops(graph.get_operations())


def _affine(x):
    return tf.nn.softplus(x * 2.0 + 1.0) - tf.reduce_mean(x)


def test_functions_first_called_in_the_context_trace_without_op_stacks_and_the_same_graph(
        monkeypatch):
    """``OP_STACK_TRACES``: tfnvp's compiled calls record no Python stack per op (the suite
    runs so, tests/conftest.py); TensorFlow's default, and the switch, record them."""
    model = tfnvp.RealNVP(SHAPE, num_scales=1, num_res_blocks=1, hidden_channels=4)
    x = tf.random.stateless_uniform((3,) + SHAPE, (1, 2), 0.0, 256.0)
    with _compat.op_stack_traces(True):  # TensorFlow's behaviour outside the context.
        model.log_prob(x)
        [compiled] = model.compiled_functions()["log_prob"]
        assert _stacks_recorded(compiled.get_concrete_function().graph) == {False}
        user = tf.function(_affine, autograph=False).get_concrete_function(x)
        assert _stacks_recorded(user.graph) == {True}
        with graph_optimization.first_call_rewrites():
            lean = tf.function(_affine, autograph=False).get_concrete_function(x)
        assert _stacks_recorded(lean.graph) == {False}
        monkeypatch.setattr(graph_optimization, "OP_STACK_TRACES", True)
        model.sample(2, seed=[1, 2])
        [sample] = model.compiled_functions()["sample"]
        assert _stacks_recorded(sample.get_concrete_function().graph) == {True}
    # The stacks are all that differs: the same ops, inputs and attributes.
    assert lean.graph.as_graph_def() == user.graph.as_graph_def()


def test_op_stack_switch_is_per_thread_nests_and_keeps_the_error_message():
    import threading

    def trace() -> set[bool]:
        return _stacks_recorded(tf.function(_affine, autograph=False).get_concrete_function(
            tf.TensorSpec([2])).graph)

    with _compat.op_stack_traces(True):
        with _compat.op_stack_traces(False):
            seen = {}
            thread = threading.Thread(target=lambda: seen.update(other=trace()))
            thread.start()
            thread.join()
            assert seen["other"] == {True}  # Another thread keeps TensorFlow's behaviour.
            with _compat.op_stack_traces(True):
                assert trace() == {True}
            assert trace() == {False}
        assert trace() == {True}

    @tf.function(autograph=False)
    def checked(x):
        tf.debugging.assert_positive(x, message="x must be positive")
        return x + 1.0

    with graph_optimization.first_call_rewrites(), pytest.raises(
            tf.errors.InvalidArgumentError) as raised:
        checked(tf.constant([-1.0, 2.0]))
    message = raised.value.message
    assert "x must be positive" in message and "<stack traces unavailable>" in message
    assert "assert_positive" in message  # The failing node is named.


def test_carried_hands_the_settings_to_mirrored_replica_threads():
    """A mirrored strategy runs each replica's function in a thread of its own, which starts
    with TensorFlow's defaults: the functions a replica calls get the rewrites, and its ops
    skip their stacks, only through ``carried``."""
    strategy = strategy_lib.make_strategy("mirrored")  # 2 replicas under tests/conftest.py
    assert strategy.num_replicas_in_sync == 2
    inner = tf.function(lambda x: x * 2.0, autograph=False)

    def replica(x):
        return inner(x) + 1.0

    def traced(wrap) -> tf.Graph:
        @tf.function(autograph=False)
        def step(x):
            return strategy.run(wrap(replica), args=(x,))

        with graph_optimization.first_call_rewrites():
            return step.get_concrete_function(tf.TensorSpec([2])).graph

    carried, plain = traced(graph_optimization.carried), traced(lambda fn: fn)
    iterations = [{r.meta_optimizer_iterations for r in _nested_call_configs(graph)}
                  for graph in (carried, plain)]
    ones = _rewrites_of(tf.compat.v1.ConfigProto().SerializeToString())
    assert iterations == [{ones.ONE}, {ones.DEFAULT_NUM_ITERS}]
    assert len(_nested_call_configs(carried)) == 2  # One call per replica.
    replica_ops = [[op for op in graph.get_operations() if op.name.startswith("replica_1/")]
                   for graph in (carried, plain)]
    assert replica_ops[0] and _stacks_recorded_ops(replica_ops[0]) == {False}
    assert _stacks_recorded_ops(replica_ops[1]) == {True}


def test_the_trainers_step_passes_the_rewrites_to_every_replicas_functions():
    """The trainer's default strategy on a machine with one device: a mirrored strategy of
    one replica, whose thread traces the conditioner bodies (shared, not inlined, with one
    replica) and their calls."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = tfnvp.RealNVP(SHAPE, num_scales=1, num_res_blocks=1, hidden_channels=4)
        optimizer = steps_lib.make_optimizer(1e-3)
    spec = tf.TensorSpec((4,) + SHAPE, tf.float32)
    steps = steps_lib.TrainSteps(model, optimizer, strategy, spec, 4, clip_grad_norm=1.0)
    with graph_optimization.first_call_rewrites():
        graph = steps.train_step.get_concrete_function(spec).graph
    configs = _nested_call_configs(graph)
    assert len(configs) >= 4  # The conditioner bodies of the 4 couplings.
    assert {r.meta_optimizer_iterations for r in configs} == {configs[0].ONE}
    assert _stacks_recorded(graph) == {False}
