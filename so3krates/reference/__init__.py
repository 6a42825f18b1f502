"""Reference data generation with GFN-xTB (tblite): labelling, Langevin MD sampling, starting structures.

``label`` (xtb), ``sample_md`` (sampling), ``from_smiles``/``cumulene``/``set_rotor_torsion``/``torsion_scan``
(structures). The CLI front end is ``so3krates generate``.
"""

from so3krates.reference.sampling import sample_md
from so3krates.reference.structures import cumulene, from_smiles, rotor_torsion, set_rotor_torsion, torsion_scan
from so3krates.reference.xtb import label

__all__ = ["label", "sample_md", "from_smiles", "cumulene", "rotor_torsion", "set_rotor_torsion", "torsion_scan"]
