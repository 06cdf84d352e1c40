"""Quantum-chemistry checks of generated molecules: GFN2-xTB (tblite) and DFT (PySCF), run through a
persistent SQLite store and a worker pool (see :mod:`molgen.validation.quantum.runner`)."""
