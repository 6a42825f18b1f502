"""Where the time of one compiled call goes: a `jax.profiler` trace of the Table 3 toluene batch (or a
water droplet), kernel times summed by kernel kind and by the model operation they came from (the HLO
``op_name`` metadata of each fusion). This is how docs/speed.md's profiles were made.

    python benchmarks/profile_call.py                     # toluene x4, energy + forces, exact filters
    python benchmarks/profile_call.py --tabulated         # with the radial-filter table
    python benchmarks/profile_call.py --train             # one training step
    python benchmarks/profile_call.py --water 201 --top 40

Kernel times add up to more than the wall time: XLA's CPU runtime runs independent kernels on both cores.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import make_train_step, predict_fn, toluene_batch, water_cluster  # noqa: E402

from so3krates import runtime  # noqa: E402
from so3krates.compile import jit  # noqa: E402
from so3krates.graph import collate, make_graph  # noqa: E402
from so3krates.model.config import ModelConfig  # noqa: E402
from so3krates.potential import Potential  # noqa: E402


def kernel_origins(hlo_text: str) -> dict[str, str]:
    """Instruction name → the JAX operation it came from (``op_name`` metadata), for every HLO line."""
    origins = {}
    for line in hlo_text.splitlines():
        match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{([^}]*)\}", line)
        if match:
            op = re.search(r'op_name="([^"]*)"', match.group(2))
            origins[match.group(1)] = op.group(1) if op else ""
    return origins


def kernel_times(trace_dir: str, calls: int, origins: dict[str, str]) -> dict[str, float]:
    """Microseconds per call of every kernel in the perfetto trace that matches an HLO instruction."""
    path = next(Path(trace_dir).rglob("perfetto_trace.json.gz"))
    events = json.load(gzip.open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    times: collections.Counter = collections.Counter()
    for event in events:
        name = event.get("name", "").split(":")[0]
        if event.get("ph") == "X" and name in origins:
            times[name] += event["dur"] / calls
    return dict(times)


def main() -> None:
    runtime.configure(restart_argv=sys.argv)  # as the so3krates command runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--water", type=int, default=None, help="a water droplet of about this many atoms")
    parser.add_argument("--tabulated", action="store_true", help="energy + forces with the radial-filter table")
    parser.add_argument("--train", action="store_true", help="one training step instead of energy + forces")
    parser.add_argument("--calls", type=int, default=10, help="calls traced")
    parser.add_argument("--top", type=int, default=25, help="rows of each table")
    args = parser.parse_args()

    potential = Potential(ModelConfig(features=132, num_layers=6, degrees=(1, 2, 3), num_heads=4, r_cut=5.0))
    if args.water:
        positions, numbers = water_cluster(args.water)
        batch = jax.device_put(collate([make_graph(positions, numbers, 5.0)]))
    else:
        batch = toluene_batch()
    variables = potential.init(jax.random.PRNGKey(0), batch)
    if args.train:
        optimizer, step = make_train_step(potential)
        state = optimizer.init(variables["params"])
        arguments = (variables["params"], state, variables["normalization"], batch)
        compiled = step.lower(*arguments).compile()
    else:
        table = potential.tabulate(variables) if args.tabulated else None
        arguments = (variables, batch, table)
        compiled = jit(predict_fn(potential)).lower(*arguments).compile()
    origins = kernel_origins(compiled.as_text())

    def call() -> None:
        jax.block_until_ready(compiled(*arguments))

    for _ in range(5):
        call()
    walls = []
    for _ in range(20):
        t0 = time.perf_counter()
        call()
        walls.append((time.perf_counter() - t0) * 1e3)
    with tempfile.TemporaryDirectory() as trace_dir:
        jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
        for _ in range(args.calls):
            call()
        jax.profiler.stop_trace()
        times = kernel_times(trace_dir, args.calls, origins)

    total = sum(times.values())
    wall = statistics.median(walls)
    print(f"median wall {wall:.2f} ms; {len(times)} kernels summing to {total / 1e3:.2f} ms per call")
    by_source: collections.Counter = collections.Counter()
    for name, us in times.items():
        op = origins[name]
        # "F"/"T": forward (jvp) or backward (transpose) pass; the operation without its layer number.
        direction = "T" if "transpose(" in op else "F"
        source = "radial_filters" if "radial_filters" in op else re.sub(r"layer_\d+", "layer", op.split("/", 2)[-1])
        by_source[f"{direction} {source[-70:]}"] += us
    print("\nby source operation (ms per call):")
    for source, us in by_source.most_common(args.top):
        print(f"  {us / 1e3:7.3f}  {source}")
    print("\nkernel durations (µs per call):")
    durations = np.asarray(sorted(times.values()))
    for lo, hi in [(0, 10), (10, 40), (40, 160), (160, np.inf)]:
        chosen = durations[(durations >= lo) & (durations < hi)]
        print(f"  {lo:>4}–{hi:<5}: {len(chosen):4d} kernels, {chosen.sum() / 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
