"""GraphMVP (Liu et al. 2022): 2D-3D multi-view pretraining of GIN encoders (``pretrainer``) and their
fine-tuning and use on MoleculeNet (``classifier``)."""
from molgen.models.graphmvp.classifier import GraphMVPEncoder, MoleculeClassifier
from molgen.models.graphmvp.pretrainer import GraphMVPPretrainer

__all__ = ["GraphMVPEncoder", "GraphMVPPretrainer", "MoleculeClassifier"]
