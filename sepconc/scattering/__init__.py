"""Fixed scattering front-ends: the order-2 tree (``scatnet``) and one-scale phase scattering."""

from .phase import PhaseScattering2D, phase_scattering_channels
from .tree import ScatteringTree, scattering_tree_channels

__all__ = [
    "PhaseScattering2D",
    "ScatteringTree",
    "phase_scattering_channels",
    "scattering_tree_channels",
]
