"""Starting structures for reference data: molecules from SMILES, [n]cumulenes and their rotor torsion.

Cumulene SCF settings (GFN2-xTB, tblite 0.8)
--------------------------------------------
Twisting one CH2 rotor of a cumulene H2C=(C=)CH2 breaks a terminal π bond and makes the frontier
orbitals near-degenerate half way, so the SCF could struggle there. Tried (restricted closed-shell
GFN2-xTB, charge 0, ideal :func:`cumulene` geometries, tblite defaults: electronic temperature 300 K,
at most 250 iterations, broyden mixing, SAD guess):

- fresh calculator per angle, 0..180° every 10° plus 80, 85, 88, 89, 90, 91, 92, 95, 100°, C3..C9:
  every point converged (about 0.2 s (C3) to 0.6 s (C9) for the 26 angles).
- one calculator reused along the scan (restart guess from the previous angle, as ``label`` and
  ``so3krates generate --torsion-scan`` do), 0..180° every 2.5° plus 89.5, 89.9, 90.1, 90.5°, C3..C9:
  all converged; the same grid with ``noise=0.05`` Å and 4 samples per angle (308 frames per chain):
  all converged.

- iterations needed (smallest of 5, 8, 10, 12, 15, 20, ... that converged, fresh calculator) at 0, 45,
  85, 89, 90, 91, 95, 135, 180°: at most 20 for every chain C3..C9; the slowest points are the
  high-energy ones (0°/180° for odd chains: 15-20, 90° for even chains: 8-12), far below the limit.

- electronic temperature (same scan script, 0..180° every 1° plus 0.1, 0.25, 89.75, 89.9, 90.1, 90.25,
  179.9°, one calculator reused along the scan, 188 points per chain, 1316 in all): 10 K: 15 failed
  ("SCF not converged in 250 cycles"), all within 0.25° of a barrier top (C3: 0, 0.1, 0.25, 179.9,
  180°; C4: 89.75, 90°; C5: 0, 0.25, 180°; C6, C8: 89.75°; C7: 0.25, 179.9°; C9: 0.1°); 100 K: 1 failed
  (C4 at 89.75°); 300 K: none, also none of 2744 noisy frames (0.05 Å, 4 per angle, 2° grid plus the
  near-top points) and none of those with the iteration limit cut to 50. Iterations needed at the
  tops with a fresh guess: at most 40 (100 K), 20 (300 K), 15 (1000 K), 12 (3000 K).
- 1000 K and 3000 K also converge everywhere, but the smearing changes the surface: E(90°) - E(0°) is
  C3 -2.356 / -2.265 / -1.919 eV and C4 +1.971 / +1.804 / +1.328 eV and C9 -0.804 / -0.668 / -0.275 eV
  at 300 / 1000 / 3000 K. ``accuracy=0.01`` at 300 K converges everywhere too and moves energies by
  < 1e-6 eV, so it buys nothing here.

So the defaults, 300 K, accuracy 1.0 and 250 iterations (``CUMULENE_ELECTRONIC_TEMPERATURE``,
``CUMULENE_MAX_ITERATIONS``), are kept: they converge everywhere with a tenfold iteration margin,
need no extra smearing that would lower the barriers, and keep the labels consistent with the other
datasets. If a strongly distorted geometry fails, retry it at 1000 K (``--electronic-temperature``)
and label the whole scan at that temperature.

Odd/even preference (GFN2-xTB, E(90°) - E(0°)): C3 -2.36, C4 +1.97, C5 -1.45, C6 +1.31, C7 -1.04,
C8 +0.97, C9 -0.80 eV. Odd carbon counts (an even number of C=C bonds: allene, [5]cumulene, ...)
prefer perpendicular CH2 planes, even counts (butatriene, ...) planar ones, as in the textbook
π-orbital picture; the barrier shrinks with chain length. E(180°) = E(0°) to 1e-4 eV (symmetry).
Both kinds of maxima have the same shape: a HOMO/LUMO crossing (a cusp of the closed-shell energy)
rounded off by the Fermi smearing. E(top + d) - E(top) in meV at 300 K for d = 0.1, 0.25, 0.5, 1, 2, 5,
10°: C3 (top 0°) -0.09, -0.59, -2.35, -9.2, -34, -146, -359; C4 (top 90°) -0.07, -0.45, -1.81, -7.2,
-27, -134, -339; C7 -0.03 ... -2.6 (1°) ... -151; C8 -0.02 ... -2.2 (1°) ... -143. So E is quadratic
within 1-2° of the top and falls ~40 meV per degree beyond (for C3/C4): the curvature there is large,
sample finely near the tops. At 10 K the rounded region shrinks (and the SCF fails, see above), at
3000 K it spreads over ~10° (C4: -0.72 meV at 1°, -70 meV at 10°). The restricted
closed-shell description also overestimates such barriers (allene: 2.36 eV here, about 2 eV measured).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

__all__ = [
    "from_smiles",
    "cumulene",
    "rotor_torsion",
    "set_rotor_torsion",
    "torsion_scan",
    "CC_BOND",
    "CH_BOND",
    "HCH_ANGLE",
    "CUMULENE_ELECTRONIC_TEMPERATURE",
    "CUMULENE_MAX_ITERATIONS",
]

CC_BOND = 1.31  # Å, cumulenic C=C
CH_BOND = 1.09  # Å
HCH_ANGLE = 117.0  # degrees
MIN_CARBONS, MAX_CARBONS = 3, 9
# tblite settings that converge at every torsion 0..180° for C3..C9 (see the module docstring).
CUMULENE_ELECTRONIC_TEMPERATURE = 300.0
CUMULENE_MAX_ITERATIONS = 250


def from_smiles(smiles: str, seed: int = 0) -> Atoms:
    """3D structure from a SMILES string: RDKit ETKDG embedding with hydrogens added, MMFF94 relaxed.

    Args:
        smiles: SMILES string (implicit hydrogens are made explicit).
        seed: random seed of the embedding (same seed, same structure).
    Returns:
        A molecule (no cell, no pbc) centred at the origin.
    Raises:
        ImportError: RDKit is not installed (``pip install so3krates[smiles]``).
        ValueError: the SMILES does not parse or cannot be embedded in 3D.
    """
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem import AllChem
    except ImportError as err:
        raise ImportError(
            "structures from SMILES need RDKit: pip install so3krates[smiles] (or pip install rdkit)"
        ) from err
    RDLogger.DisableLog("rdApp.*")  # the parser's own complaints go to stderr otherwise
    mol = Chem.MolFromSmiles(str(smiles)) if str(smiles).strip() else None
    if mol is None:
        raise ValueError(f"cannot parse SMILES {smiles!r}")
    mol = Chem.AddHs(mol)
    params = AllChem.ETKDGv3()
    params.randomSeed = int(seed)
    if AllChem.EmbedMolecule(mol, params) != 0:
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise ValueError(f"cannot embed SMILES {smiles!r} in 3D (RDKit ETKDG failed)")
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=2000)
    else:  # elements MMFF94 does not know: fall back to UFF
        AllChem.UFFOptimizeMolecule(mol, maxIters=2000)
    conf = mol.GetConformer()
    positions = np.array(conf.GetPositions(), dtype=np.float64)
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    atoms = Atoms(numbers=numbers, positions=positions - positions.mean(axis=0))
    atoms.info["smiles"] = str(smiles)
    return atoms


def cumulene(
    n_carbons: int,
    torsion_deg: float = 0.0,
    *,
    cc_bond: float = CC_BOND,
    ch_bond: float = CH_BOND,
    hch_angle: float = HCH_ANGLE,
) -> Atoms:
    """[n]cumulene H2C=(C=)_{n-2}CH2 along z, centred at the origin.

    Atom order: carbons 0..n-1 (increasing z), then the two H of the first CH2, then the two H of the
    last CH2. At ``torsion_deg = 0`` both CH2 planes are the xz plane.

    Args:
        n_carbons: chain length, 3 (allene) .. 9.
        torsion_deg: angle between the two H–C–H planes (see :func:`set_rotor_torsion`).
        cc_bond: C=C bond length, Å (one value for the whole chain; default 1.31).
        ch_bond: C–H bond length, Å (default 1.09).
        hch_angle: H–C–H angle, degrees (default 117).
    """
    if int(n_carbons) != n_carbons or not MIN_CARBONS <= n_carbons <= MAX_CARBONS:
        raise ValueError(f"cumulene needs {MIN_CARBONS}..{MAX_CARBONS} carbons, got {n_carbons}")
    if cc_bond <= 0 or ch_bond <= 0 or not 0 < hch_angle < 180:
        raise ValueError(f"need bond lengths > 0 Å and 0 < H-C-H < 180°, got {cc_bond}, {ch_bond}, {hch_angle}")
    n = int(n_carbons)
    z = (np.arange(n) - (n - 1) / 2.0) * cc_bond
    carbons = np.stack([np.zeros(n), np.zeros(n), z], axis=1)
    half = np.radians(hch_angle / 2.0)
    hydrogens = []
    for end, outward in ((0, -1.0), (n - 1, 1.0)):
        for side in (1.0, -1.0):
            hydrogens.append(carbons[end] + ch_bond * np.array([side * np.sin(half), 0.0, outward * np.cos(half)]))
    atoms = Atoms(f"C{n}H4", positions=np.vstack([carbons, np.array(hydrogens)]))
    atoms.info["n_carbons"] = n
    if torsion_deg:
        set_rotor_torsion(atoms, torsion_deg)
    return atoms


def _layout(atoms: Atoms) -> int:
    """Number of carbons, after checking the :func:`cumulene` atom order."""
    symbols = atoms.get_chemical_symbols()
    n = symbols.count("C")
    if n < 2 or symbols != ["C"] * n + ["H"] * 4:
        raise ValueError("expected a cumulene in the order of so3krates.reference.structures.cumulene: C...C H H H H")
    return n


def _plane_direction(atoms: Atoms, h_pair: tuple[int, int], axis: np.ndarray) -> np.ndarray:
    d = atoms.positions[h_pair[0]] - atoms.positions[h_pair[1]]
    d = d - np.dot(d, axis) * axis
    return d / np.linalg.norm(d)


def rotor_torsion(atoms: Atoms) -> float:
    """Signed angle (degrees, -180..180) from the first CH2 plane to the last one, about the chain axis."""
    n = _layout(atoms)
    axis = atoms.positions[n - 1] - atoms.positions[0]
    axis /= np.linalg.norm(axis)
    a = _plane_direction(atoms, (n, n + 1), axis)
    b = _plane_direction(atoms, (n + 2, n + 3), axis)
    return float(np.degrees(np.arctan2(np.dot(np.cross(a, b), axis), np.dot(a, b))))


def set_rotor_torsion(atoms: Atoms, angle_deg: float) -> Atoms:
    """Set the rotor torsion in place: rigidly rotate the last CH2's hydrogens about the chain axis.

    The axis runs through the two terminal carbons; the carbons and the first CH2 do not move.
    Returns ``atoms`` for chaining.
    """
    n = _layout(atoms)
    origin = atoms.positions[n - 1].copy()
    axis = origin - atoms.positions[0]
    axis /= np.linalg.norm(axis)
    theta = np.radians(float(angle_deg) - rotor_torsion(atoms))
    # Rodrigues rotation of the two hydrogens of the last CH2 about the axis through the last carbon.
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    rot = np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * (k @ k)
    pos = atoms.positions.copy()
    pos[n + 2 : n + 4] = (pos[n + 2 : n + 4] - origin) @ rot.T + origin
    atoms.positions = pos
    atoms.info["torsion_deg"] = float(angle_deg)
    return atoms


def torsion_scan(
    n_carbons: int,
    angles_deg: list[float] | np.ndarray,
    noise: float = 0.0,
    samples_per_angle: int = 1,
    seed: int = 0,
    **geometry: float,
) -> list[Atoms]:
    """Unlabelled cumulene structures over a grid of rotor torsions (label them with ``reference.xtb.label``).

    Args:
        n_carbons: chain length 3..9.
        angles_deg: torsions to visit, degrees.
        noise: standard deviation (Å) of Gaussian displacements added to every atom after setting the
            torsion (0: exact ideal geometries).
        samples_per_angle: structures per angle (with noise > 0 each is displaced differently).
        seed: seeds the displacements.
        **geometry: ``cc_bond``, ``ch_bond``, ``hch_angle`` passed to :func:`cumulene`.
    Returns:
        ``len(angles_deg) * samples_per_angle`` structures, angle-major, each with
        ``info["torsion_deg"]`` (the nominal angle) and ``info["n_carbons"]``.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0 Å, got {noise}")
    if samples_per_angle < 1:
        raise ValueError(f"samples_per_angle must be >= 1, got {samples_per_angle}")
    angles = [float(a) for a in np.atleast_1d(np.asarray(angles_deg, dtype=float))]
    if not angles:
        raise ValueError("torsion scan needs at least one angle")
    rng = np.random.default_rng(seed)
    base = cumulene(n_carbons, **geometry)
    out = []
    for angle in angles:
        for _ in range(samples_per_angle):
            atoms = set_rotor_torsion(base.copy(), angle)
            if noise > 0:
                atoms.positions = atoms.positions + rng.normal(scale=noise, size=atoms.positions.shape)
            atoms.info["torsion_deg"] = angle
            atoms.info["n_carbons"] = int(n_carbons)
            out.append(atoms)
    return out
