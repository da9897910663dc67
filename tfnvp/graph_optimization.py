"""What tfnvp's own compiled functions pay before their first run: graph optimization, and
the Python stacks of their ops.

TensorFlow optimizes a function's graph (Grappler, its "meta optimizer") once, before the
function's first run, and by default runs its whole list of passes twice.  A first call pays
for it: in the paper's CIFAR-10 model's training step (batch 16, 2 cores of a Xeon with
AVX-512), Grappler took 8.6 s of the first step's 15 s beyond a steady step.  The second
round of passes rewrites little in tfnvp's graphs, and some passes have nothing to do on a
host without GPU, so tfnvp's own functions are optimized with ``REWRITES``:

* ``meta_optimizer_iterations = ONE``: one round of Grappler's passes instead of two;
* ``disable_tfg_optimizer``: without the MLIR (TFG) passes, which sink operations into the
  branches of conditionals and drop unused functions;
* on a host without GPU, also ``memory_optimization = NO_MEM_OPT`` (the memory optimizer
  swaps tensors to host memory and recomputes marked operations on accelerators) and
  ``layout_optimizer = OFF`` (it converts convolutions to the GPU's NCHW layout).

Every other pass runs as by default: constant folding, arithmetic simplification, the
remapper (which fuses convolutions with their bias and activation into oneDNN's kernels).
A function computes the same numbers either way (Grappler's rewrites preserve them), and
its steady speed is unchanged (docs/performance.md, "Fourth round").

Tracing records, for every op it creates, the Python stack that created it (TensorFlow's
"defined at" in a graph's runtime errors).  Under Keras layers and TFP bijectors that stack
is deep, and walking it took 15-20% of tracing the small CIFAR-10 configuration's training
step (docs/performance.md, "Fifth round").  tfnvp's own functions are traced without it
(``OP_STACK_TRACES = False``): a runtime error in one still names the failing op and carries
its message, but shows "<stack traces unavailable>" where the stack would be, as a loaded
SavedModel's do.  Set ``tfnvp.graph_optimization.OP_STACK_TRACES = True`` before the first
call to have them (read when a function is traced).

Where it applies: the model's eager calls (``FlowModel``'s compiled methods: ``log_prob``,
``sample``, ``bits_per_dim``, ``encode``, ``decode``, ...), ``fit`` and ``evaluate``, and
the trainer.  A user's own ``tf.function`` gets TensorFlow's defaults unless it is first
called inside ``first_call_rewrites()``.  A replica function handed to a mirrored
strategy's ``strategy.run`` runs in a thread of its own: ``carried(fn)`` gives it the calling
thread's settings.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterator

import tensorflow as tf

from tfnvp import _compat

__all__ = ["CPU_REWRITES", "OP_STACK_TRACES", "REWRITES", "carried", "first_call_rewrites",
           "rewrites"]

#: Grappler's ``RewriterConfig`` fields tfnvp's functions run with, on every host.
REWRITES: dict[str, bool | str] = {"meta_optimizer_iterations": "ONE",
                                   "disable_tfg_optimizer": True}
#: And on a host without GPU.
CPU_REWRITES: dict[str, bool | str] = {"memory_optimization": "NO_MEM_OPT",
                                       "layout_optimizer": "OFF"}

#: Whether the ops of functions first traced inside ``first_call_rewrites()`` record the
#: Python stack that created them (module docstring).
OP_STACK_TRACES = False


@functools.cache
def rewrites() -> dict[str, bool | str]:
    """``REWRITES``, with ``CPU_REWRITES`` when this process sees no GPU."""
    if tf.config.list_physical_devices("GPU"):
        return dict(REWRITES)
    return {**REWRITES, **CPU_REWRITES}


@contextlib.contextmanager
def first_call_rewrites() -> Iterator[None]:
    """A context in which the ``tf.function``s this thread traces or calls for the first
    time are optimized with ``rewrites()``, and traced without their ops' Python stacks
    unless ``OP_STACK_TRACES``.

    A function keeps the optimization of its first call: call it inside the context every
    time (TensorFlow would optimize it again for another configuration).  Wrap a training
    loop's ``tf.function`` calls, as the trainer does::

        with tfnvp.graph_optimization.first_call_rewrites():
            for batch in dataset:
                loss = train_step(batch)
    """
    with _compat.function_call_rewrites(rewrites()), _compat.op_stack_traces(OP_STACK_TRACES):
        yield


def carried(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn``, run with the calling thread's settings (those of ``first_call_rewrites()``,
    if it is inside it) in whichever thread runs it.

    ``tf.distribute``'s mirrored strategies run each replica's function in a thread of its
    own, which starts with TensorFlow's defaults: inside ``strategy.run`` the graph around
    a replica's work would keep ``first_call_rewrites()``'s settings while the functions
    traced and called in the replica's thread (the conditioner bodies, with the
    convolutions) would not.  Wrap the replica function when it is handed over, in the
    thread that traces the step, as the trainer does::

        strategy.run(tfnvp.graph_optimization.carried(replica_step), args=(batch,))
    """
    settings = _compat.thread_call_settings()

    @functools.wraps(fn)
    def run(*args, **kwargs):
        with _compat.restored_call_settings(settings):
            return fn(*args, **kwargs)

    return run
