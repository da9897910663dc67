"""The ops a traced function runs, counted through the functions it calls.

Conditioner bodies are functions of their own (``tfnvp.nets.shared_body``): a
graph holds one call op per conditioner and the body's ops once, in its
function library.  ``executed_op_types`` counts every op as often as it runs:
a called function's ops once per call, recursively.
"""

from __future__ import annotations

import collections

import tensorflow as tf

_CALLS = ("PartitionedCall", "StatefulPartitionedCall")


def executed_op_types(graph: tf.Graph) -> collections.Counter:
    """Op type -> how many ops of that type one run of ``graph`` executes."""
    library = {f.signature.name: f for f in graph.as_graph_def().library.function}

    def count(nodes) -> collections.Counter:
        total = collections.Counter()
        for op_type, callee in nodes:
            if op_type in _CALLS:
                total += count((n.op, n.attr["f"].func.name if n.op in _CALLS else None)
                               for n in library[callee].node_def)
            else:
                total[op_type] += 1
        return total

    return count((op.type, op.get_attr("f").name if op.type in _CALLS else None)
                 for op in graph.get_operations())
