"""Neural-network building blocks: GVP layers and the GVP molecule trunk."""
from molgen.nn.gvp import GVP, GaussianRBF, GVPConv, GVPLayerNorm, GVPSequential
from molgen.nn.molecule_net import GVPMoleculeNet, complete_graph

__all__ = ["GVP", "GaussianRBF", "GVPConv", "GVPLayerNorm", "GVPSequential", "GVPMoleculeNet", "complete_graph"]
