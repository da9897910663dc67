"""Where the time goes: per-op-type totals from one ``tf.profiler`` trace.

``profile(fn, *args)`` runs ``fn`` (a warmed-up ``tf.function``) under
``tf.profiler.experimental`` and aggregates the host trace (``xplane.pb``,
parsed with the ``xplane_pb2`` protobuf shipped inside TensorFlow) by op
type.  Events are TF executor ops (``name:Type``); under XLA the compiled
cluster shows up as one ``_XlaRun``/``XlaLaunch`` op plus its thunks.
Times are summed over the inter-op threads, so with intra-op parallelism the
total is wall time times the number of busy executor threads (shares are
what matter).

Usage::

    python bench/profile_ops.py --model=paper --what=train --dtype=float32 [--xla]
"""

from __future__ import annotations

import collections
import glob
import os
import re
import tempfile

import tensorflow as tf

__all__ = ["profile", "format_profile"]


def _op_type(name: str) -> str:
    # TF op events are named "scope/op_name:OpType"; XLA/oneDNN ones differ.
    if ":" in name:
        return name.rsplit(":", 1)[1].strip()
    return re.sub(r"[._\d]+$", "", name.split("/")[-1]) or name


def profile(fn, *args, runs: int = 1) -> dict[str, float]:
    """Seconds per call spent in each op type (host executor events)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    logdir = tempfile.mkdtemp(prefix="tfnvp_profile_")
    tf.profiler.experimental.start(logdir)
    try:
        for _ in range(runs):
            result = fn(*args)
        tf.nest.map_structure(lambda t: t.numpy() if hasattr(t, "numpy") else t, result)
    finally:
        tf.profiler.experimental.stop()
    totals: dict[str, float] = collections.defaultdict(float)
    for path in glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True):
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            if not plane.name.startswith("/host:CPU"):
                continue
            names = {k: v.name for k, v in plane.event_metadata.items()}
            for line in plane.lines:
                if line.name == "python":
                    continue  # Python-side tracing, not op execution.
                for event in line.events:
                    name = names.get(event.metadata_id, "")
                    if ":" not in name or "::" in name:
                        continue  # Threadpool/executor bookkeeping.
                    totals[_op_type(name)] += event.duration_ps * 1e-12 / runs
    return dict(totals)


def format_profile(totals: dict[str, float], top: int = 15) -> str:
    total = sum(totals.values()) or 1.0
    rows = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
    lines = [f"{'op type':<40} {'ms/call':>9} {'share':>6}"]
    lines += [f"{k[:40]:<40} {v * 1e3:9.1f} {v / total:6.1%}" for k, v in rows]
    lines.append(f"{'total (summed over threads)':<40} {total * 1e3:9.1f}")
    return "\n".join(lines)
