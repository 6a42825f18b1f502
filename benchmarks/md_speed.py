"""MD speed of a paper-size So3krates model: the JAX engine vs ASE's VelocityVerlet with the calculator.

Systems: ethanol (9 atoms, a molecule) and periodic boxes of liquid water at 1 g/cm³ (about 1,000 and
10,000 atoms). Model: F = 132, 6 layers, degrees {1, 2, 3}, r_cut 5 Å, float32 (the paper's MD17
setting) with random weights — the cost of a step does not depend on the weights' values. NVE, 0.5 fs,
neighbour-list skin 0.5 Å, radial filters tabulated (the calculator's and engine's default).

Each (system, engine) case runs in its own subprocess so that its peak memory (``ru_maxrss``) is its
own. A case: build, one warm-up step (jit compilation, timed separately), then ``steps`` timed steps.
Reported: steps/s, ns/day at 0.5 fs, compile time, peak resident memory, neighbour-list builds.

``--remat`` (``ModelConfig.remat``, per-layer rematerialisation) is on by default for the 10k box only:
without it one compiled step of that box needs about 67 GiB; with it the backward pass keeps only the
layers' inputs. Each result records whether it used remat. ``--compile-only`` stops after XLA's memory
analysis of the JAX engine's compiled step (nothing is run: a cheap way to compare remat on and off).
``--merge`` keeps the cases of the existing JSON that this run does not repeat (each result carries its
own date and command), so the table can be assembled from separate runs.

    python benchmarks/md_speed.py                           # all cases → benchmarks/results/md_speed.json
    python benchmarks/md_speed.py --systems ethanol water1000 --engines jax
    python benchmarks/md_speed.py --systems water10000 --merge --markdown   # remat on (the default there)
    python benchmarks/md_speed.py --systems water1000 --engines jax --remat on off --compile-only --out m.json
    python benchmarks/md_speed.py --markdown                # also (re)write the table in docs/md.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from so3krates import runtime

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "md_speed.json"
DOC = ROOT / "docs" / "md.md"
TIMESTEP_FS = 0.5
SYSTEMS = {"ethanol": 9, "water1000": 1000, "water10000": 10000}
# Timed steps per engine: fewer for the big box (one step of 10k atoms takes tens of seconds on a CPU).
STEPS = {"ethanol": {"jax": 2000, "ase": 200}, "water1000": {"jax": 10, "ase": 10}, "water10000": {"jax": 3, "ase": 3}}
# Systems that use the rematerialised model unless --remat says otherwise (see the module docstring).
REMAT_BY_DEFAULT = {"water10000"}
TABLE_START = "<!-- md_speed table start -->"
TABLE_END = "<!-- md_speed table end -->"


def water_box(n_atoms: int, seed: int = 0):  # noqa: ANN201 (ase.Atoms)
    """Periodic cubic box of ``n_atoms // 3`` randomly oriented rigid waters at 1 g/cm³ (29.9 Å³ each),
    on random sites of a cubic grid (no overlaps: the grid spacing is ≥ 3 Å)."""
    from ase import Atoms
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(seed)
    n_mol = n_atoms // 3
    side = (n_mol * 29.9) ** (1 / 3)
    m = int(np.ceil(n_mol ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(m)] * 3, indexing="ij"), -1).reshape(-1, 3) * (side / m)
    centres = grid[rng.choice(len(grid), n_mol, replace=False)]
    local = np.array([[0.0, 0.0, 0.0], [0.96, 0.0, 0.0], [0.96 * np.cos(1.824), 0.96 * np.sin(1.824), 0.0]])
    rotations = Rotation.random(n_mol, random_state=seed).as_matrix()
    positions = (centres[:, None, :] + np.einsum("mij,aj->mai", rotations, local)).reshape(-1, 3)
    return Atoms(np.tile([8, 1, 1], n_mol), positions=positions, cell=np.eye(3) * side, pbc=True)


def structure(name: str):  # noqa: ANN201
    from ase.build import molecule

    return molecule("CH3CH2OH") if name == "ethanol" else water_box(SYSTEMS[name])


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# The paper's MD17 model, and the main job's quick-preset model (so3krates train without --data): the
# latter is what fits a 10,000-atom box in this machine's memory.
MODELS = {
    "paper": {"features": 132, "num_layers": 6, "degrees": (1, 2, 3), "num_heads": 4, "r_cut": 5.0},
    "small": {"features": 32, "num_layers": 2, "degrees": (1, 2), "num_heads": 2, "r_cut": 4.0},
}
MODEL_TEXT = {
    "paper": "F=132, 6 layers, degrees (1,2,3), r_cut 5 Å",
    "small": "F=32, 2 layers, degrees (1,2), 2 heads, r_cut 4 Å (the main job's quick preset)",
}


def run_case(
    system: str,
    engine: str,
    steps: int,
    remat: bool = False,
    compile_only: bool = False,
    seed: int = 0,
    model_name: str = "paper",
) -> dict[str, Any]:
    """One (system, engine) case in this process; returns its numbers.

    ``remat`` evaluates the model with per-layer rematerialisation (same numbers, less memory);
    ``compile_only`` returns after the JAX engine's memory analysis, without running a step.
    """
    import jax

    from so3krates.calculator import So3kratesCalculator
    from so3krates.md import ForceField, JaxMD, ase_dynamics, initial_velocities
    from so3krates.md.testing import random_model
    from so3krates.model.config import ModelConfig

    config = ModelConfig(**MODELS[model_name], dtype="float32", remat=remat)
    potential, variables = random_model(config, seed=seed)
    # Random weights give atomic energies of a few eV; keep the scale physical-ish so that 0.5 fs steps
    # do not blow the box apart within the few timed steps (speed does not depend on it).
    variables["normalization"]["scale"] = variables["normalization"]["scale"] * 0.05
    model = ForceField(potential, variables, None)
    atoms = structure(system)
    initial_velocities(atoms, 300.0, seed=seed)
    n_atoms = len(atoms)

    result: dict[str, Any] = {"system": system, "engine": engine, "atoms": n_atoms, "remat": remat, "model": model_name}
    start = time.perf_counter()
    if engine == "jax":
        md = JaxMD(model, atoms, "nve", timestep_fs=TIMESTEP_FS, skin=0.5)
        # XLA's own account of the compiled chunk's buffers, before running it: a case that cannot fit
        # in the memory this machine has left is reported, not attempted (the machine is shared).
        compiled = md._chunk.lower(md.state, md.neighbours, np.int32(1), md._params).compile()
        analysis = compiled.memory_analysis()
        need = int(analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes)
        result.update(
            compiled_temp_mib=analysis.temp_size_in_bytes / 2**20,
            compiled_total_mib=need / 2**20,
            edge_capacity=md.neighbours.capacity,
            listed_pairs=int(np.asarray(md.neighbours.edge_mask).sum()),
        )
        available = available_memory_bytes()
        result["available_mib_at_compile"] = available / 2**20 if available is not None else None
        if compile_only:
            result["aot_compile_s"] = time.perf_counter() - start
            result["peak_rss_mib"] = peak_rss_mib()
            return result
        if available is not None and need > 0.8 * available:
            result["skipped"] = (
                f"needs {need / 2**30:.1f} GiB for one compiled step; "
                f"the machine has {available / 2**30:.1f} GiB available"
            )
            result["peak_rss_mib"] = peak_rss_mib()
            return result
        result["aot_compile_s"] = time.perf_counter() - start  # jit reuses this compilation below
        md.run(1, interval=1)
        jax.block_until_ready(md.state.positions)
        compile_s = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        md.run(steps, interval=steps)
        jax.block_until_ready(md.state.positions)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        builds = md.stats.neighbour_builds + 1
        energy = md.potential_energy() + md.kinetic_energy()
    else:
        atoms.calc = So3kratesCalculator(model=model, skin=0.5)
        dynamics = ase_dynamics(atoms, "nve", TIMESTEP_FS)
        dynamics.run(1)
        compile_s = time.perf_counter() - start
        start, cpu = time.perf_counter(), time.process_time()
        dynamics.run(steps)
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        builds = atoms.calc.neighbour_list.builds
        result.update(
            edge_capacity=atoms.calc._neighbours.capacity,
            listed_pairs=int(np.asarray(atoms.calc._neighbours.edge_mask).sum()),
        )
        energy = atoms.get_potential_energy() + atoms.get_kinetic_energy()
    rate = steps / elapsed
    result.update(
        steps=steps,
        seconds=elapsed,
        steps_per_s=rate,
        ns_per_day=rate * TIMESTEP_FS * 86400 * 1e-6,
        ms_per_step=1e3 / rate,
        cpu_s_per_step=cpu / steps,
        first_step_s=compile_s,
        neighbour_builds=builds,
        peak_rss_mib=peak_rss_mib(),
        final_total_energy_eV=float(energy),
    )
    return result


def available_memory_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def environment() -> dict[str, Any]:
    import jax

    return {
        "backend": jax.default_backend(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "jax": jax.__version__,
        "machine": platform.machine(),
        "processor": platform.processor() or platform.platform(),
    }


def markdown_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| system | atoms | engine | remat | timed steps | steps/s | ns/day | wall ms/step | CPU s/step | "
        "first step s | peak RSS MiB |",
        "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        remat = "yes" if r.get("remat") else "no"
        if "skipped" in r:
            lines.append(
                f"| {r['system']} | {r['atoms']} | {r['engine']} | {remat} | – | – | – | – | – | – | {r['skipped']} |"
            )
            continue
        if "steps" not in r:  # --compile-only cases have no timings
            continue
        lines.append(
            f"| {r['system']} | {r['atoms']} | {r['engine']} | {remat} | {r['steps']} | {r['steps_per_s']:.3g} | "
            f"{r['ns_per_day']:.3g} | {r['ms_per_step']:.4g} | {r['cpu_s_per_step']:.3g} | {r['first_step_s']:.1f} | "
            f"{r['peak_rss_mib']:.0f} |"
        )
    return "\n".join(lines)


def write_markdown(payload: dict[str, Any]) -> None:
    env = payload["environment"]
    # Merged files hold cases from several runs: name every run (date, command, load) the table draws on.
    runs: dict[tuple[str, str], float] = {}
    for r in payload["results"]:
        runs.setdefault((r.get("date", payload["date"]), r.get("command", payload["command"])), r.get("load", -1.0))
    measured = "; ".join(
        f"{date} with `{command}`" + (f" (load average {load:.1f} at its start)" if load >= 0 else "")
        for (date, command), load in runs.items()
    )
    block = (
        f"{TABLE_START}\n"
        f"Measured on {env['backend']} ({env['affinity']} cores available; the machine was shared with other "
        f"jobs): {measured}.\n\n{markdown_table(payload['results'])}\n{TABLE_END}"
    )
    text = DOC.read_text() if DOC.exists() else ""
    if TABLE_START in text and TABLE_END in text:
        head, rest = text.split(TABLE_START, 1)
        tail = rest.split(TABLE_END, 1)[1]
        text = head + block + tail
    else:
        text = text + ("\n" if text else "") + block + "\n"
    DOC.write_text(text)


def main() -> int:
    runtime.configure(restart_argv=sys.argv)  # as the so3krates command runs
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--systems", nargs="+", choices=list(SYSTEMS), default=list(SYSTEMS))
    parser.add_argument("--engines", nargs="+", choices=("jax", "ase"), default=["jax", "ase"])
    parser.add_argument("--steps", type=int, default=None, help="timed steps for every case (default: per system)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--markdown", action="store_true", help="write the table into docs/md.md")
    parser.add_argument(
        "--remat",
        nargs="+",
        choices=("auto", "on", "off"),
        default=["auto"],
        help=f"per-layer rematerialisation; auto: on for {sorted(REMAT_BY_DEFAULT)} only; 'on off' runs both",
    )
    parser.add_argument("--compile-only", action="store_true", help="JAX engine: memory analysis only, no steps")
    parser.add_argument("--merge", action="store_true", help="keep the other cases already in --out")
    parser.add_argument(
        "--model",
        choices=tuple(MODELS),
        default="paper",
        help="paper: " + MODEL_TEXT["paper"] + "; small: " + MODEL_TEXT["small"],
    )
    parser.add_argument("--case", nargs=3, metavar=("SYSTEM", "ENGINE", "REMAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.case:  # child process: one case, JSON on the last line of stdout
        system, engine, remat = args.case
        steps = args.steps or STEPS[system][engine]
        print(json.dumps(run_case(system, engine, steps, remat == "on", args.compile_only, model_name=args.model)))
        return 0

    results: list[dict[str, Any]] = []
    command = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    load = os.getloadavg()[0]
    previous: list[dict[str, Any]] = []
    if args.merge and args.out.exists():
        old = json.loads(args.out.read_text())
        for r in old["results"]:  # results of older files carry the file's date and command
            stamp = {"date": old["date"], "command": old["command"]}
            stamp["load"] = old.get("environment", {}).get("load_average_at_start", [-1.0])[0]
            previous.append(stamp | r)
    payload: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "command": command,
        "model": MODEL_TEXT[args.model] + ", float32, random weights; NVE 0.5 fs, skin 0.5 Å",
        "environment": environment(),
        "results": results,
    }
    engines = sorted(args.engines, key=lambda e: e != "jax")  # jax first: it checks the memory
    if args.compile_only:
        engines = ["jax"]
    cases = [
        (system, remat)
        for system in args.systems
        for remat in dict.fromkeys(
            (system in REMAT_BY_DEFAULT) if choice == "auto" else choice == "on" for choice in args.remat
        )
    ]
    new_keys = {(system, engine, remat) for system, remat in cases for engine in engines}
    kept = [r for r in previous if (r["system"], r["engine"], bool(r.get("remat", False))) not in new_keys]
    payload["results"] = results = kept
    for system, remat in cases:
        skipped = None
        for engine in engines:
            stamp = {"remat": remat, "date": payload["date"], "command": command, "load": load}
            if skipped:  # the ASE calculator evaluates the same model on the same padded sizes
                results.append(
                    {"system": system, "engine": engine, "atoms": skipped["atoms"], "skipped": skipped["skipped"]}
                    | stamp
                )
                continue
            argv = [sys.executable, __file__, "--case", system, engine, "on" if remat else "off", "--model", args.model]
            if args.steps:
                argv += ["--steps", str(args.steps)]
            if args.compile_only:
                argv.append("--compile-only")
            print(f"{system} / {engine} / remat {'on' if remat else 'off'} ...", flush=True)
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                results.append({"system": system, "engine": engine, "error": done.stderr[-500:]} | stamp)
                continue
            result = json.loads(done.stdout.strip().splitlines()[-1]) | stamp
            results.append(result)
            if "skipped" in result:
                skipped = result
                print(f"  skipped: {result['skipped']}", flush=True)
            elif args.compile_only:
                print(
                    f"  compiled step: {result['compiled_temp_mib']:.0f} MiB temp, "
                    f"{result['compiled_total_mib']:.0f} MiB in all",
                    flush=True,
                )
            else:
                print(
                    f"  {result['atoms']} atoms: {result['steps_per_s']:.3g} steps/s, "
                    f"{result['ns_per_day']:.3g} ns/day, "
                    f"first step {result['first_step_s']:.1f} s, peak {result['peak_rss_mib']:.0f} MiB",
                    flush=True,
                )
            # Written after every case, so a long run that is stopped keeps what it measured.
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(payload, indent=2) + "\n")
    if args.markdown:
        payload["results"] = [r for r in results if "error" not in r]
        payload["environment"]["memory_gib"] = (available_memory_bytes() or 0) / 2**30
        write_markdown(payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
