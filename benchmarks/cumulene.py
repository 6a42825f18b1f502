"""Cumulene rotor torsion (paper Sec. 4, Fig. 2a, Fig. 3, Fig. 8): local So3krates vs the non-local correction.

For each chain length H2C=(C=)_{n-2}CH2, n carbons:

1. ``generate``: GFN2-xTB (tblite) reference data through :mod:`so3krates.reference`: ``--frames``
   structures with a random rotor torsion in [0°, 180°] and Gaussian displacements of every atom
   (``--noise`` Å, a stand-in for thermal motion) for training, plus a rigid torsion scan 0..180° in
   5° steps (no displacement) for the energy profile. SCF settings: the reference module's
   ``CUMULENE_ELECTRONIC_TEMPERATURE`` / ``CUMULENE_MAX_ITERATIONS``.
2. ``train``: models with the paper's cumulene architecture (Table 7, Fig. 2: r_cut 2.5 Å, 4 layers,
   degrees (1,), spherical filters, β = 1, i.e. forces only, energy constant from A.14), by default one
   local and one with the non-local correction (eq. 14, κ = 1, p = 6); ``--variants efa nonlocal_efa``
   adds Euclidean fast attention (``global_attention="efa"``, docs/efa.md) to the local / non-local model.
   Width, data and epochs are cut down to fit a shared CPU (see ``--features``, ``--radial-hidden``,
   ``--max-time``): the paper used F = 128, 1k training points and 4k epochs.
3. ``evaluate``: energy of the rigid scan predicted by each model vs xTB; MAE of the profile after
   aligning the constant (mean difference removed), and the figures
   ``docs/figures/cumulene_profiles.png`` (Fig. 2a), ``cumulene_efa_profiles.png`` (with EFA),
   ``cumulene_sphc_pca.png`` (Fig. 3) and ``cumulene_neighbourhood.png`` (Fig. 8). Variants without a
   trained model are skipped, and a figure is only written when all the models it needs exist.

Everything goes to ``--work`` (default ``benchmarks/results/runs/cumulene``, not committed); the numbers
land in ``--work``/results.json. The same steps by CLI for one chain length (the non-local κ and p are
ModelConfig fields, set through the YAML config's ``model`` section)::

    python benchmarks/cumulene.py generate --carbons 3 5 7 9 --frames 260
    python benchmarks/cumulene.py train --carbons 9 5 7 3 --max-time 240
    python benchmarks/cumulene.py evaluate --carbons 3 5 7 9
    python benchmarks/cumulene.py all --carbons 9 5 7 3 --max-time 240    # the three in a row
    python benchmarks/cumulene.py train --carbons 3 9 --variants efa nonlocal_efa --max-time 240
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from so3krates.so3 import DegreeLayout

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "results" / "runs" / "cumulene"
FIGURES = ROOT / "docs" / "figures"
SCAN_ANGLES = np.arange(0.0, 180.0 + 1e-9, 5.0)
VARIANTS = ("local", "nonlocal", "efa", "nonlocal_efa", "efa1", "nonlocal_efa1", "efa1_control")
TRAIN_DEFAULT = ("local", "nonlocal")
# EFA (docs/efa.md, section "Cumulene with EFA"): r_max 13 Å covers the longest chain (C9: 11.8 Å between
# the end hydrogens of the ideal geometry, plus the 0.02 Å displacements); b_max = 4π needs a Lebedev grid
# whose safe frequency is ≥ 4π / 0.95: M = 230 (T = 4.67π). θ_max = b_max / r_max = 0.97 / Å.
EFA_MAX_LENGTH = 13.0
EFA_MAX_FREQUENCY = 4.0 * math.pi
EFA_GRID_SIZE = 230


# -- configuration ---------------------------------------------------------------------------------------
def model_config(
    variant: str,
    features: int = 32,
    radial_hidden: int = 32,
    dtype: str = "float32",
    efa_max_length: float = EFA_MAX_LENGTH,
    efa_max_frequency: float = EFA_MAX_FREQUENCY,
    efa_grid_size: int = EFA_GRID_SIZE,
    nonlocal_normalization: str = "orthonormal",
) -> Any:
    """The cumulene model of the paper (Table 7, rows Fig. 2/3) at a reduced width.

    Args:
        variant: "local" (eq. 13), "nonlocal" (eq. 14 with κ = 1, p = 6, A.2), "efa" (the local model plus
            Euclidean fast attention in every layer, ``global_attention="efa"``), "nonlocal_efa" (both);
            "efa1", "nonlocal_efa1": the same with equivariant EFA (q, k, v of degrees ≤ 1, its l = 1
            output added to the SPHCs, ``efa_max_degree=1``); "efa1_control": the matched local control
            of "efa1" (``global_attention="efa-control"``: the EFA branch replaced by Dense layers).
        features: F (paper 128).  radial_hidden: hidden width of the radial filter MLP (paper 128; on
            the all-pairs list of the non-local model it dominates the cost, hence smaller here).
        efa_max_length, efa_max_frequency, efa_grid_size: r_max (Å), b_max and M of the EFA variants
            (ModelConfig checks b_max against the grid); F_qk = 16 and F_v = 32 are ModelConfig's defaults.
        nonlocal_normalization: the spherical harmonics of eq. 14's SPHC distances ("orthonormal", the
            paper's, or "racah", e3x's: see ModelConfig).
    """
    from so3krates.model.config import ModelConfig

    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    efa: dict[str, Any] = {}
    if variant != "local" and variant != "nonlocal":  # the local / non-local configs stay as they were
        efa = {
            "global_attention": "efa-control" if variant.endswith("_control") else "efa",
            "efa_max_degree": 1 if "efa1" in variant else 0,
            "efa_max_length": efa_max_length,
            "efa_max_frequency": efa_max_frequency,
            "efa_grid_size": efa_grid_size,
        }
    return ModelConfig(
        features=features,
        num_layers=4,
        degrees=(1,),
        num_heads=4,
        r_cut=2.5,
        radial_hidden=radial_hidden,
        spherical_hidden=32,
        dtype=dtype,
        nonlocal_correction=variant.startswith("nonlocal"),
        nonlocal_kappa=1.0,
        nonlocal_p=6,
        nonlocal_normalization=nonlocal_normalization,
        **efa,
    )


def paths(work: Path, n: int) -> dict[str, Path]:
    """Files of chain length n under ``work``."""
    return {
        "train": work / f"c{n}_train.extxyz",
        "scan": work / f"c{n}_scan.extxyz",
        **{variant: work / f"c{n}_{variant}" for variant in VARIANTS},
    }


# -- 1. reference data -----------------------------------------------------------------------------------
def label_frames(frames: Sequence[Any]) -> tuple[list[Any], int]:
    """GFN2-xTB energies and forces with the reference module's cumulene SCF settings.

    Frames whose SCF does not converge are dropped (and counted), not retried.
    """
    from so3krates.reference import structures as st
    from so3krates.reference.xtb import make_calculator, single_point

    calc = make_calculator(
        "GFN2-xTB",
        electronic_temperature=st.CUMULENE_ELECTRONIC_TEMPERATURE,
        max_iterations=st.CUMULENE_MAX_ITERATIONS,
    )
    out, failed = [], 0
    for k, atoms in enumerate(frames):
        try:
            out.append(single_point(atoms, calc, name=f"frame {k}"))
        except ValueError:
            failed += 1
    return out, failed


def generate(n: int, work: Path, frames: int, noise: float, seed: int, overwrite: bool = False) -> dict[str, Any]:
    """Training frames (random torsions + displacements) and the rigid scan of chain length n."""
    from ase.io import write

    from so3krates.reference.structures import torsion_scan

    p = paths(work, n)
    work.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"n_carbons": n}
    if overwrite or not p["train"].exists():
        angles = np.random.default_rng([seed, n]).uniform(0.0, 180.0, frames)
        t0 = time.perf_counter()
        labelled, failed = label_frames(torsion_scan(n, angles, noise=noise, seed=seed + n))
        write(p["train"], labelled, format="extxyz")
        info.update(train_frames=len(labelled), train_failed=failed, train_seconds=time.perf_counter() - t0)
    if overwrite or not p["scan"].exists():
        labelled, failed = label_frames(torsion_scan(n, SCAN_ANGLES, noise=0.0))
        if failed:
            raise RuntimeError(f"C{n}: {failed} frames of the rigid scan did not converge")
        write(p["scan"], labelled, format="extxyz")
    return info


# -- 2. training -----------------------------------------------------------------------------------------
def train_config(data: Path, variant: str, args: argparse.Namespace) -> Any:
    """Force-only training (β = 1; A.14 constant fitted afterwards) of one variant."""
    from so3krates.train import TrainConfig

    return TrainConfig(
        data=str(data),
        n_train=args.n_train,
        n_valid=args.n_valid,
        n_test=None,
        seed=args.seed,
        batch_size=args.batch_size,
        max_epochs=args.max_epochs,
        max_time=args.max_time,
        beta=1.0,
        lr=args.lr,
        schedule="exponential",
        decay_factor=0.5,
        decay_epochs=1000,
        grad_clip=1.0,
        ema_decay=args.ema_decay,
        valid_every=args.valid_every,
        progress=False,
        model=model_config(
            variant,
            args.features,
            args.radial_hidden,
            efa_max_length=args.efa_max_length,
            efa_max_frequency=args.efa_max_frequency,
            efa_grid_size=args.efa_grid_size,
            nonlocal_normalization=args.nonlocal_normalization,
        ),
    )


def train_one(n: int, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train (or skip if already trained) one model; returns a summary."""
    from so3krates import run_dir as rd
    from so3krates.train import train

    p = paths(args.work, n)
    run = p[variant]
    if (run / rd.WEIGHTS_FILE).exists() and (run / rd.METADATA_FILE).exists() and not args.overwrite:
        meta = json.loads((run / "metadata.json").read_text())
        if meta.get("training"):
            return {"n_carbons": n, "variant": variant, "skipped": True}
    if args.overwrite and run.exists():
        import shutil

        shutil.rmtree(run)
    config = train_config(p["train"], variant, args)
    print(f"== C{n} {variant}: training for at most {args.max_time} s", flush=True)
    result = train(config, run, log=lambda s: print(f"   [C{n} {variant}] {s}", flush=True))
    return {
        "n_carbons": n,
        "variant": variant,
        "epochs": result.epochs,
        "stopped": result.stopped,
        "wall_time_s": result.wall_time,
        "energy_constant": result.energy_constant,
        "valid": result.valid_metrics,
    }


# -- 3. evaluation ---------------------------------------------------------------------------------------
def read_scan(path: Path) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Rigid scan frames, their torsions (degrees) and xTB energies (eV)."""
    from ase.io import read

    frames = read(path, index=":")
    angles = np.array([float(a.info["torsion_deg"]) for a in frames])
    energies = np.array([a.get_potential_energy() for a in frames])
    return frames, angles, energies


def batch_of(frames: Sequence[Any], config: Any) -> Any:
    from so3krates.graph import collate, make_graph

    graphs = [make_graph(a.positions, a.numbers, config.r_cut) for a in frames]
    return collate(graphs, all_pairs=config.nonlocal_correction)


def predict_energies(potential: Any, variables: Any, frames: Sequence[Any]) -> np.ndarray:
    """Model energies (eV) of the frames, one padded batch."""
    batch = batch_of(frames, potential.config)
    return np.asarray(potential.energy(variables, batch))[: len(frames)]


def capture_sphcs(potential: Any, variables: Any, frames: Sequence[Any]) -> np.ndarray:
    """SPHCs χ of every layer, shape (num_layers + 1, n_frames, n_atoms, dim): the initial ones (eq. 11)
    first, then after each layer (the model sows them as ``intermediates/sphc``)."""
    import jax.numpy as jnp

    from so3krates.potential import edge_vectors, pair_vectors

    batch = batch_of(frames, potential.config)
    dtype = potential.dtype
    pos = jnp.asarray(batch.positions, dtype)
    pairs = pair_vectors(pos, batch) if potential.config.nonlocal_correction else None
    _, state = potential.module.apply(
        variables,
        batch,
        edge_vectors(pos, jnp.asarray(batch.cell, dtype), batch),
        pairs,
        pos,
        mutable=["intermediates"],
    )
    chi = np.stack([np.asarray(c) for c in state["intermediates"]["sphc"]])
    n_atoms = len(frames[0])
    return chi[:, : n_atoms * len(frames)].reshape(chi.shape[0], len(frames), n_atoms, -1)


def neighbourhood_weights(chi: np.ndarray, layout: DegreeLayout, kappa: float = 1.0, p: int = 6) -> np.ndarray:
    """φ_χcut(χ̃_ij) (eq. 14, A.2) of one structure from its SPHCs (n, dim) via the model's own
    :func:`sphc_neighbourhood_weight`; returns the (n, n) matrix (zero diagonal)."""
    import jax.numpy as jnp

    from so3krates.model.layers import Pairs
    from so3krates.model.nonlocal_correction import sphc_neighbourhood_weight

    n = chi.shape[0]
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    zeros = jnp.zeros(len(i))
    pairs = Pairs(
        i=jnp.asarray(i), j=jnp.asarray(j), mask=jnp.ones(len(i), bool), r=zeros, cutoff=zeros, rbf=zeros, sph=zeros
    )
    w = sphc_neighbourhood_weight(jnp.asarray(chi), pairs, jnp.full(len(i), n), kappa, p, layout)
    out = np.zeros((n, n))
    out[i, j] = np.asarray(w)
    return out


def profile_metrics(angles: np.ndarray, reference: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Errors of a predicted torsion profile (eV → meV)."""
    diff = predicted - reference
    aligned = diff - diff.mean()
    flat = reference - reference.mean()
    return {
        "profile_mae_meV": 1e3 * float(np.mean(np.abs(aligned))),
        "profile_max_error_meV": 1e3 * float(np.max(np.abs(aligned))),
        "mae_with_A14_constant_meV": 1e3 * float(np.mean(np.abs(diff))),
        "flat_profile_mae_meV": 1e3 * float(np.mean(np.abs(flat))),
        "reference_range_meV": 1e3 * float(np.ptp(reference)),
        "predicted_range_meV": 1e3 * float(np.ptp(predicted)),
        "reference_min_deg": float(angles[np.argmin(reference)]),
        "predicted_min_deg": float(angles[np.argmin(predicted)]),
    }


def evaluate(carbons: Sequence[int], work: Path, figures_chain: int = 9) -> dict[str, Any]:
    """Profiles, metrics and figures for every chain length and every variant that has a trained model.

    Variants without a trained model are skipped with a message. A figure is only (re)written when every
    model it needs is there, so a partial evaluation never overwrites a committed figure with less:
    ``cumulene_profiles.png`` (Fig. 2a) needs the local and the non-local model of every chain evaluated,
    ``cumulene_efa_profiles.png`` is written when any EFA model exists (with whatever variants exist), and
    the Fig. 3 / Fig. 8 figures need the non-local model of ``figures_chain`` carbons.
    """
    import jax

    from so3krates import run_dir as rd
    from so3krates.run_dir import load_run

    results: dict[str, Any] = {"chains": {}, "reference": {}, "skipped": []}
    profiles: dict[int, dict[str, np.ndarray]] = {}
    for n in carbons:
        p = paths(work, n)
        if not p["scan"].exists():
            print(f"C{n}: no rigid scan at {p['scan']}, skipped", flush=True)
            continue
        frames, angles, reference = read_scan(p["scan"])
        results["reference"][str(n)] = {
            "barrier_meV": 1e3 * float(np.ptp(reference)),
            "min_deg": float(angles[np.argmin(reference)]),
            "flat_profile_mae_meV": 1e3 * float(np.mean(np.abs(reference - reference.mean()))),
        }
        entry: dict[str, Any] = {}
        prof = {"angles": angles, "xtb": reference}
        for variant in VARIANTS:
            if not (p[variant] / rd.WEIGHTS_FILE).exists():
                print(f"C{n} {variant}: no trained model in {p[variant]}, skipped", flush=True)
                results["skipped"].append(f"C{n} {variant}")
                continue
            potential, variables, meta = load_run(p[variant])
            pred = predict_energies(potential, variables, frames)
            prof[variant] = pred
            entry[variant] = {
                **profile_metrics(angles, reference, pred),
                "epochs": meta.get("training", {}).get("epochs"),
                "wall_time_s": meta.get("training", {}).get("wall_time_s"),
                "valid_forces_mae_eV_A": meta.get("training", {}).get("valid_metrics", {}).get("forces_mae"),
                "num_parameters": meta.get("num_parameters"),
            }
        results["chains"][str(n)] = entry
        profiles[n] = prof
    (work / "results.json").write_text(json.dumps(results, indent=2))
    np.savez(work / "profiles.npz", **{f"c{n}_{k}": v for n, d in profiles.items() for k, v in d.items()})
    missing = [f"C{n} {v}" for n, d in profiles.items() for v in ("local", "nonlocal") if v not in d]
    if profiles and not missing:
        plot_profiles(profiles, FIGURES / "cumulene_profiles.png", ("xtb", "local", "nonlocal"))
    elif profiles:
        print(f"cumulene_profiles.png not written (missing models: {', '.join(missing)})", flush=True)
    if any(v in d for d in profiles.values() for v in VARIANTS[2:]):
        with_models = {n: d for n, d in profiles.items() if any(v in d for v in VARIANTS)}
        plot_profiles(with_models, FIGURES / "cumulene_efa_profiles.png", ("xtb", *VARIANTS))
    if figures_chain in profiles and "nonlocal" in profiles[figures_chain]:
        potential, variables, _ = load_run(paths(work, figures_chain)["nonlocal"])
        frames, angles, _ = read_scan(paths(work, figures_chain)["scan"])
        initial = potential.init(jax.random.PRNGKey(0), batch_of(frames[:1], potential.config))
        initial["normalization"] = variables["normalization"]
        results["sphc_pca"] = plot_sphc_pca(
            capture_sphcs(potential, initial, frames),
            capture_sphcs(potential, variables, frames),
            figures_chain,
            FIGURES / "cumulene_sphc_pca.png",
        )
        results["neighbourhood"] = plot_neighbourhood(
            capture_sphcs(potential, variables, frames),
            angles,
            figures_chain,
            FIGURES / "cumulene_neighbourhood.png",
            potential.config.degrees,
        )
        (work / "results.json").write_text(json.dumps(results, indent=2))
    else:
        print(
            f"cumulene_sphc_pca.png / cumulene_neighbourhood.png not written (no non-local C{figures_chain} model)",
            flush=True,
        )
    return results


def efa_signal(carbons: Sequence[int], work: Path, config: Any) -> dict[str, Any]:
    """What a degree-0 EFA kernel can see of the torsion, from the rigid scans (no model).

    The only torsion-dependent distances of a cumulene are the four between hydrogens of opposite ends
    (carbons lie on the axis, the two hydrogens of one end are rigid). EFA's kernel between two atoms is
    Σ_k c_k j₀(θ_k r) (docs/efa.md), so the torsion reaches an EFA layer only through
    S_k(φ) = Σ_{cross-end H pairs} j₀(θ_k r_ab(φ)). Note Σ r_ab² is the same at every torsion (the
    perpendicular offsets cancel pairwise), so S_k varies only through the curvature of j₀ in r².
    Returns per chain the cross-end H–H distance range (Å) and, per frequency θ_k, the range of S_k over
    the scan (the kernel weight of one pair is at most 1).
    """
    from so3krates.model.efa import erope_frequencies

    thetas = erope_frequencies(config.efa_qk_features, config.efa_max_frequency, config.efa_max_length)
    out: dict[str, Any] = {"theta_per_A": thetas.tolist(), "chains": {}}
    for n in carbons:
        scan = paths(work, n)["scan"]
        if not scan.exists():
            continue
        frames, _, _ = read_scan(scan)
        hydrogens = [i for i, z in enumerate(frames[0].numbers) if z == 1]
        first, last = hydrogens[:2], hydrogens[2:]
        cross = np.array([[a.get_distance(i, j) for i in first for j in last] for a in frames])  # (angles, 4)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = thetas[None, None, :] * cross[:, :, None]
            j0 = np.where(x > 0, np.sin(x) / np.where(x > 0, x, 1.0), 1.0)
        s = j0.sum(axis=1)  # (angles, K)
        out["chains"][str(n)] = {
            "cross_HH_distance_range_A": [float(cross.min()), float(cross.max())],
            "sum_r2_range_A2": float(np.ptp((cross**2).sum(axis=1))),
            "S_k_range": np.ptp(s, axis=0).tolist(),
            "S_k_range_max": float(np.ptp(s, axis=0).max()),
        }
    return out


# -- figures ---------------------------------------------------------------------------------------------
def plot_profiles(
    profiles: dict[int, dict[str, np.ndarray]], path: Path, keys: Sequence[str] = ("xtb", "local", "nonlocal")
) -> None:
    """Fig. 2a: rotor torsion energy profiles, xTB vs the models in ``keys`` that exist (each aligned to the
    reference mean)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chains = sorted(profiles)
    cols = min(4, len(chains))
    rows = math.ceil(len(chains) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False, sharex=True)
    styles = {
        "xtb": ("k", "-", "GFN2-xTB"),
        "local": ("tab:blue", "--", "local"),
        "nonlocal": ("tab:red", "-", "non-local"),
        "efa": ("tab:green", "-.", "EFA"),
        "nonlocal_efa": ("tab:purple", ":", "non-local + EFA"),
        "efa1": ("tab:orange", "-", "EFA l≤1"),
        "nonlocal_efa1": ("tab:brown", "-.", "non-local + EFA l≤1"),
        "efa1_control": ("tab:gray", ":", "control of EFA l≤1"),
    }
    for ax, n in zip(axes.flat, chains, strict=False):
        d = profiles[n]
        ref = d["xtb"]
        for key in keys:
            if key not in d:
                continue
            y = d[key] - d[key].mean() + ref.mean() - ref.min()
            colour, ls, label = styles[key]
            ax.plot(d["angles"], y, color=colour, ls=ls, lw=1.6 if key == "xtb" else 1.3, label=label)
        ax.set_title(f"C{n}H4")
        ax.set_xticks([0, 45, 90, 135, 180])
    for ax in axes.flat[len(chains) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("energy (eV)")
    for ax in axes[-1, :]:
        ax.set_xlabel("rotor torsion (°)")
    handles: dict[str, Any] = {}  # every variant once, also those missing in the first panel
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    axes.flat[0].legend(list(handles.values()), list(handles), fontsize=7, frameon=False)
    fig.suptitle("Cumulene rotor torsion, r_cut 2.5 Å, 4 layers, l_max 1, force-only training, 240 s", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _pca2(data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2D PCA projection (centred), and the explained variance fractions."""
    centred = data - data.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:2].T, (s**2 / np.sum(s**2))[:2]


def _end_separation(chi: np.ndarray, n: int) -> float:
    """Mean SPHC distance between hydrogens of opposite ends / mean distance between all atom pairs
    (one structure; < 1: the two rotors are closer in SPHC space than a typical pair)."""
    ha, hb = chi[n : n + 2], chi[n + 2 : n + 4]
    cross = np.mean([np.linalg.norm(a - b) for a in ha for b in hb])
    allpairs = np.linalg.norm(chi[:, None] - chi[None], axis=-1)
    return float(cross / allpairs[~np.eye(len(chi), dtype=bool)].mean())


def plot_sphc_pca(before: np.ndarray, after: np.ndarray, n: int, path: Path) -> dict[str, Any]:
    """Fig. 3: 2D PCA of the final-layer SPHCs of every atom of the rigid scan, before/after training."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    summary: dict[str, Any] = {"n_carbons": n}
    n_atoms = before.shape[2]
    colours = ["0.6"] * n + ["tab:green"] * 2 + ["tab:red"] * 2
    for ax, chi, title in ((axes[0], before, "before training"), (axes[1], after, "after training")):
        last = chi[-1]  # (frames, atoms, dim)
        proj, var = _pca2(last.reshape(-1, last.shape[-1]))
        proj = proj.reshape(last.shape[0], n_atoms, 2)
        for a in range(n_atoms):
            ax.scatter(proj[:, a, 0], proj[:, a, 1], s=6, color=colours[a], alpha=0.7)
        ax.set_title(f"{title} (PC var {var[0]:.2f}, {var[1]:.2f})", fontsize=9)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        key = "before" if chi is before else "after"
        summary[f"{key}_end_separation_per_layer"] = [
            float(np.mean([_end_separation(chi[t, f], n) for f in range(chi.shape[1])])) for t in range(chi.shape[0])
        ]
    handles = [
        plt.Line2D([], [], marker="o", ls="", color=c, label=lab)
        for c, lab in (("0.6", "C"), ("tab:green", "H (first CH2)"), ("tab:red", "H (last CH2)"))
    ]
    axes[1].legend(handles=handles, fontsize=7, frameon=False)
    fig.suptitle(f"C{n}H4 SPHCs (final layer, all torsions of the rigid scan), non-local model", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return summary


def plot_neighbourhood(
    chi: np.ndarray, angles: np.ndarray, n: int, path: Path, degrees: Sequence[int]
) -> dict[str, Any]:
    """Fig. 8 (analogue): spherical-neighbourhood weights φ_χcut(χ̃_ij) between the rotor hydrogens vs
    torsion, per layer (each layer's input SPHCs) and averaged over the layers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from so3krates.so3 import DegreeLayout

    layout = DegreeLayout(tuple(degrees))
    num_layers = chi.shape[0] - 1
    cross = np.zeros((num_layers, len(angles)))
    same = np.zeros((num_layers, len(angles)))
    carbon = np.zeros((num_layers, len(angles)))
    for t in range(num_layers):
        for f in range(len(angles)):
            w = neighbourhood_weights(chi[t, f], layout)
            hs = [n, n + 1, n + 2, n + 3]
            cross[t, f] = np.mean([w[a, b] for a in hs[:2] for b in hs[2:]] + [w[b, a] for a in hs[:2] for b in hs[2:]])
            same[t, f] = np.mean([w[hs[0], hs[1]], w[hs[1], hs[0]], w[hs[2], hs[3]], w[hs[3], hs[2]]])
            carbon[t, f] = np.mean([w[a, c] for a in hs for c in range(n)])
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
    for t in range(num_layers):
        axes[0].plot(angles, cross[t], label=f"layer {t + 1}")
    axes[0].set_title("H(first CH2) – H(last CH2), per layer", fontsize=9)
    axes[1].plot(angles, cross.mean(0), color="tab:purple", label="H–H opposite ends")
    axes[1].plot(angles, same.mean(0), color="tab:green", ls="--", label="H–H same end")
    axes[1].plot(angles, carbon.mean(0), color="0.5", ls=":", label="H–C")
    axes[1].set_title("averaged over the layers", fontsize=9)
    for ax in axes:
        ax.set_xlabel("rotor torsion (°)")
        ax.set_ylabel("φ_χcut(χ̃_ij)")
        ax.set_xticks([0, 45, 90, 135, 180])
        ax.legend(fontsize=7, frameon=False)
    fig.suptitle(f"C{n}H4, trained non-local model: spherical neighbourhood weights (eq. 14, A.2)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return {
        "n_carbons": n,
        "cross_end_HH_mean": float(cross.mean()),
        "cross_end_HH_range": [float(cross.mean(0).min()), float(cross.mean(0).max())],
        "same_end_HH_mean": float(same.mean()),
        "H_C_mean": float(carbon.mean()),
    }


# -- command line ----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=("generate", "train", "evaluate", "all", "efa-signal"))
    parser.add_argument("--carbons", type=int, nargs="+", default=[9, 5, 7, 3], help="chain lengths, in run order")
    parser.add_argument("--work", type=Path, default=WORK, help="data, runs and results.json")
    parser.add_argument("--frames", type=int, default=260, help="training+validation+test frames per chain length")
    parser.add_argument("--noise", type=float, default=0.02, help="Gaussian displacement of every atom, Å")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=200)
    parser.add_argument("--n-valid", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-epochs", type=int, default=4000, help="paper: 4k")
    parser.add_argument("--max-time", type=float, default=240.0, help="seconds of training per model")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--ema-decay", type=float, default=0.99, help="paper 0.999; shorter for short runs")
    parser.add_argument("--valid-every", type=int, default=5)
    parser.add_argument("--features", type=int, default=32, help="F (paper 128)")
    parser.add_argument("--radial-hidden", type=int, default=32, help="radial filter hidden width (paper 128)")
    parser.add_argument(
        "--variants", nargs="+", default=list(TRAIN_DEFAULT), choices=VARIANTS, help="variants to train"
    )
    parser.add_argument("--efa-max-length", type=float, default=EFA_MAX_LENGTH, help="EFA r_max, Å")
    parser.add_argument("--efa-max-frequency", type=float, default=EFA_MAX_FREQUENCY, help="EFA b_max")
    parser.add_argument("--efa-grid-size", type=int, default=EFA_GRID_SIZE, help="EFA Lebedev grid size M")
    parser.add_argument(
        "--figures-chain", type=int, default=9, help="chain length of the Fig. 3 / Fig. 8 figures (non-local)"
    )
    parser.add_argument("--overwrite", action="store_true", help="regenerate data / retrain existing models")
    parser.add_argument(
        "--nonlocal-normalization",
        choices=("orthonormal", "racah"),
        default="orthonormal",
        help="spherical harmonics of eq. 14's SPHC distances: the paper's (default) or e3x's (before this revision)",
    )
    args = parser.parse_args(argv)
    args.work = args.work.resolve()
    log: list[dict[str, Any]] = []
    if args.step == "efa-signal":
        config = model_config(
            "efa",
            efa_max_length=args.efa_max_length,
            efa_max_frequency=args.efa_max_frequency,
            efa_grid_size=args.efa_grid_size,
        )
        signal = efa_signal(sorted(args.carbons), args.work, config)
        (args.work / "efa_signal.json").write_text(json.dumps(signal, indent=2))
        print("θ_k (1/Å):", " ".join(f"{t:.3f}" for t in signal["theta_per_A"]))
        for n, c in signal["chains"].items():
            lo, hi = c["cross_HH_distance_range_A"]
            print(
                f"C{n}: cross-end H–H distances {lo:.3f}–{hi:.3f} Å, range of Σr² {c['sum_r2_range_A2']:.1e} Å², "
                f"range of S_k over the scan: max {c['S_k_range_max']:.2e}; per k "
                + " ".join(f"{v:.1e}" for v in c["S_k_range"])
            )
    if args.step in ("generate", "all"):
        for n in args.carbons:
            info = generate(n, args.work, args.frames, args.noise, args.seed, args.overwrite)
            print(f"C{n}: {info}", flush=True)
    if args.step in ("train", "all"):
        for n in args.carbons:
            for variant in args.variants:
                summary = train_one(n, variant, args)
                log.append(summary)
                print(json.dumps(summary), flush=True)
                with open(args.work / "train_log.jsonl", "a") as f:
                    f.write(json.dumps(summary) + "\n")
    if args.step in ("evaluate", "all"):
        results = evaluate(sorted(args.carbons), args.work, args.figures_chain)
        for n, ref in results["reference"].items():
            print(
                f"C{n} xTB barrier {ref['barrier_meV']:.0f} meV, minimum {ref['min_deg']:.0f}°, "
                f"flat-profile MAE {ref['flat_profile_mae_meV']:.1f} meV",
                flush=True,
            )
        for n, entry in results["chains"].items():
            for variant, m in entry.items():
                print(
                    f"C{n} {variant:12s} profile MAE {m['profile_mae_meV']:8.1f} meV  "
                    f"(flat {m['flat_profile_mae_meV']:.1f}"
                    f" meV, ref range {m['reference_range_meV']:.0f}, pred range {m['predicted_range_meV']:.0f}) "
                    f"epochs {m['epochs']}",
                    flush=True,
                )


if __name__ == "__main__":
    from so3krates import runtime

    runtime.configure()  # the so3krates command's process tuning (buffer reuse), before any array
    main()
