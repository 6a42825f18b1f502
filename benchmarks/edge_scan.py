"""Cost of padded edges: the Table 3 toluene batch padded to a range of edge counts, one energy + forces
call each (tabulated radial filters unless --exact), median milliseconds.

The real structures are the same in every row; only the padded edge count changes, so the rows show
what an edge slot costs as the per-edge arrays grow. Before XLA's buffers were reused between calls
(docs/speed.md item 10) they showed a step at ~950 slots, most likely where the call's block of
intermediates outgrew what glibc keeps in its heap; ``SO3KRATES_REUSE_CPU_BUFFERS=0`` shows it again.

    python benchmarks/edge_scan.py                       # 832 to 1,568 edge slots, JSON in results/edge_scan.json
    python benchmarks/edge_scan.py --edges 832 1600 64 --exact
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed import RESULTS, median_ms, toluene_graphs  # noqa: E402

from so3krates import runtime  # noqa: E402
from so3krates.graph import collate, pad_sizes_for  # noqa: E402
from so3krates.model.config import ModelConfig  # noqa: E402
from so3krates.potential import Potential  # noqa: E402


def main() -> None:
    runtime.configure(restart_argv=sys.argv)  # as the so3krates command runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, nargs=3, default=[832, 1600, 32], metavar=("FIRST", "STOP", "STEP"))
    parser.add_argument("--exact", action="store_true", help="exact radial-filter MLPs instead of the table")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=RESULTS / "edge_scan.json")
    args = parser.parse_args()

    graphs = toluene_graphs()
    potential = Potential(ModelConfig(features=132, num_layers=6, degrees=(1, 2, 3), num_heads=4, r_cut=5.0))
    sizes = pad_sizes_for(graphs)
    variables = potential.init(jax.random.PRNGKey(0), collate(graphs, sizes))
    variables = potential.prepare(variables, tabulate=not args.exact)
    real_edges = sum(g.n_edges for g in graphs)

    rows = []
    for n_edges in range(*args.edges):
        if n_edges < real_edges:
            continue
        batch = jax.device_put(collate(graphs, dataclasses.replace(sizes, n_edges=n_edges)))
        jax.block_until_ready(potential.energy_forces(variables, batch))
        ms = median_ms(lambda batch=batch: potential.energy_forces(variables, batch), args.repeats)
        # One (E, F) float32 array of per-edge features: how much of the cache a single one takes.
        array_kib = n_edges * potential.config.features * 4 / 1024
        rows.append({"padded_edges": n_edges, "ms": ms, "us_per_slot": ms / n_edges * 1e3, "edge_array_kib": array_kib})
        print(f"  {n_edges:5d} edge slots ({array_kib:4.0f} KiB per (E, F) array): {ms:6.2f} ms", flush=True)
    payload = {
        "command": " ".join(sys.argv),
        "filters": "exact" if args.exact else "tabulated",
        "real_edges": real_edges,
        "padded_atoms": sizes.n_atoms,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
