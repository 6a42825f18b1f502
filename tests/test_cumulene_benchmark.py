"""Light checks of the cumulene / Fig. 9 benchmark scripts (no training): variant configs, the global
model's cutoff, and that evaluation skips missing models without touching the committed figures."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load(name: str) -> ModuleType:
    """Import a benchmark script as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_cumulene_variants():
    cumulene = load("cumulene")
    configs = {v: cumulene.model_config(v) for v in cumulene.VARIANTS}
    assert not configs["local"].nonlocal_correction and configs["local"].global_attention is None
    assert configs["nonlocal"].nonlocal_correction and configs["nonlocal"].global_attention is None
    assert not configs["efa"].nonlocal_correction and configs["efa"].global_attention == "efa"
    assert configs["nonlocal_efa"].nonlocal_correction and configs["nonlocal_efa"].global_attention == "efa"
    # the local part is the same model in every variant
    for config in configs.values():
        assert (config.r_cut, config.num_layers, config.degrees, config.features) == (2.5, 4, (1,), 32)
    # r_max covers the longest chain, C9 (ideal geometry, every torsion of the scan)
    from so3krates.reference.structures import cumulene as build

    longest = max(float(build(9, a).get_all_distances().max()) for a in (0.0, 45.0, 90.0))
    assert configs["efa"].efa_max_length > longest + 0.5
    # the config refuses a grid that cannot integrate b_max = 4π
    with pytest.raises(ValueError, match="cannot integrate"):
        cumulene.model_config("efa", efa_grid_size=194)


def test_global_model_has_every_pair_as_edge():
    scaling = load("nonlocal_scaling")
    from so3krates.graph import make_graph
    from so3krates.model.config import ModelConfig

    local = ModelConfig(features=32, num_layers=2, degrees=(1,), r_cut=2.5, radial_hidden=32)
    positions, numbers = scaling.random_structure(40)
    config = scaling.global_config(local)(positions)
    assert config.r_cut > scaling.diameter(positions)
    assert make_graph(positions, numbers, config.r_cut).n_edges == 40 * 39
    assert make_graph(positions, numbers, local.r_cut).n_edges < 40 * 39
    efa = scaling.efa_config(local)(positions)
    assert efa.global_attention == "efa" and efa.efa_max_length > scaling.extent_bound(positions)
    assert scaling.extent_bound(positions) >= scaling.diameter(positions)
    assert scaling.estimated_bytes(config, 40, 40 * 39) > scaling.estimated_bytes(local, 40, 100)


def test_evaluate_skips_missing_models(tmp_path, monkeypatch, capsys):
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from so3krates.reference.structures import cumulene as build

    cumulene = load("cumulene")
    figures = tmp_path / "figures"
    monkeypatch.setattr(cumulene, "FIGURES", figures)
    frames = []
    for angle in cumulene.SCAN_ANGLES[::9]:  # 0, 45, 90, 135, 180
        atoms = build(3, float(angle))
        atoms.info["torsion_deg"] = float(angle)
        atoms.calc = SinglePointCalculator(atoms, energy=float(np.cos(np.radians(2 * angle))), forces=np.zeros((7, 3)))
        frames.append(atoms)
    write(cumulene.paths(tmp_path, 3)["scan"], frames, format="extxyz")
    results = cumulene.evaluate([3, 5], tmp_path, figures_chain=3)
    out = capsys.readouterr().out
    assert "C5: no rigid scan" in out and "C3 efa: no trained model" in out
    assert results["chains"]["3"] == {}
    assert results["skipped"] == [f"C3 {v}" for v in cumulene.VARIANTS]
    assert results["reference"]["3"]["barrier_meV"] == pytest.approx(2000.0)
    assert not figures.exists()  # no figure is written from missing models
    # EFA signal: Σ r² over the cross-end H–H pairs is torsion independent, the j₀ sums are not
    signal = cumulene.efa_signal([3], tmp_path, cumulene.model_config("efa"))["chains"]["3"]
    assert signal["sum_r2_range_A2"] < 1e-6
    assert signal["cross_HH_distance_range_A"][1] - signal["cross_HH_distance_range_A"][0] > 0.3
    assert 1e-3 < signal["S_k_range_max"] < 0.1
