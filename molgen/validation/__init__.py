"""molgen's validation suite: one judge for every molecule generator.

:func:`validate` runs structure checks, geometry checks (PoseBusters, distribution distances), and optional
xTB and DFT calculations on molecules or an SDF/XYZ file, and writes metrics.json, molecules.csv, an annotated
SDF and a self-contained report.html. See ``docs/validation.md``.
"""
from molgen.validation.api import ValidationResult, validate
from molgen.validation.structure import structure_metrics, structure_table, summarize_structure

__all__ = ["validate", "ValidationResult", "structure_metrics", "structure_table", "summarize_structure"]
