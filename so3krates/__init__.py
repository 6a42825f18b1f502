"""So3krates: machine-learned force fields with equivariant attention (Frank et al., NeurIPS 2022)."""

__version__ = "0.1.0"
