"""PropMolFlow (Zeng et al. 2025, on FlowMol): property-guided 3D molecule generation by geometry-complete SE(3)
flow matching. ``model``: the LightningModule; ``net``: the endpoint networks (GVP and Gaunt backbones)."""
from molgen.models.propmolflow.model import PropMolFlow, WithProperty

__all__ = ["PropMolFlow", "WithProperty"]
