"""Data layer: the shared molecule representation, readers/writers and data sets."""
from molgen.data.molecule import Molecule, BondOrder, ELEMENTS
from molgen.data.io import read_molecules, write_sdf, write_xyz, ReadReport

__all__ = ["Molecule", "BondOrder", "ELEMENTS", "read_molecules", "write_sdf", "write_xyz", "ReadReport"]
