"""Neural-network building blocks: EGNN and GVP layers, the GVP molecule trunk, radial bases, sinusoidal
embeddings and graph utilities."""
from molgen.nn.egnn import EGNN, EGNNLayer
from molgen.nn.embeddings import SinusoidalPositions, sinusoidal_embedding
from molgen.nn.graph import complete_graph, edge_bond_types
from molgen.nn.gvp import GVP, GVPConv, GVPLayerNorm, GVPSequential
from molgen.nn.molecule_net import GVPMoleculeNet
from molgen.nn.radial import GaussianRBF

__all__ = ["EGNN", "EGNNLayer", "GVP", "GaussianRBF", "GVPConv", "GVPLayerNorm", "GVPSequential", "GVPMoleculeNet",
           "SinusoidalPositions", "complete_graph", "edge_bond_types", "sinusoidal_embedding"]
