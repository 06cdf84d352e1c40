"""Structure-based evaluation of designed sequences: DSSP of their (predicted) structures and TM-score diversity.

This is the part of the CPDiffusion-SS evaluation that needs structures (Hu et al. 2024 fold every design
with ESMFold, then run DSSP): it takes structures from anywhere (ESMFold PDBs written by
:mod:`molgen.evaluation.esmfold_oracle`, a folder of PDBs folded elsewhere, or :class:`Protein` objects)
so that it can be checked on real experimental structures without a folding model.

* SS of a design = DSSP (mdtraj) of its structure through :func:`molgen.data.proteins.assign_ss`, the same
  code and the same 8 -> 3 mapping as the templates, so design and template SS strings are comparable.
* TM-score diversity per template = mean pairwise TM-score ((TM1 + TM2) / 2, tmtools / TM-align) among the
  designs' structures (:func:`molgen.evaluation.ss_metrics.tm_diversity`; lower = more diverse).
* TM to template = TM-score of each design normalised by the template length (the paper's TM_wt), when the
  template structure is known.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from molgen.data.proteins import Protein, assign_ss, read_structure
from molgen.evaluation.ss_metrics import tm_diversity


def read_design_structure(path: str | Path) -> Protein:
    """Read one design structure (PDB/mmCIF, first chain) and assign its SS with DSSP (mdtraj).

    Raises:
        DataError: missing, empty or unreadable file, no residue with a complete backbone.
    """
    return assign_ss(read_structure(path))


def _as_protein(s: "str | Path | Protein") -> Protein:
    if isinstance(s, Protein):
        return s if s.ss8 is not None else assign_ss(s)
    return read_design_structure(s)


def tm_to_template(design: Protein, template: Protein) -> float:
    """TM-score of ``design`` superposed on ``template``, normalised by the template length (TM_wt).

    NaN when either has fewer than 3 residues with a C-alpha (TM-align's minimum).
    """
    from tmtools import tm_align

    a = np.asarray(design.ca, dtype=float)
    b = np.asarray(template.ca, dtype=float)
    ok_a, ok_b = np.isfinite(a).all(1), np.isfinite(b).all(1)
    seq_a = "".join(c for c, k in zip(design.sequence, ok_a) if k)
    seq_b = "".join(c for c, k in zip(template.sequence, ok_b) if k)
    if min(len(seq_a), len(seq_b)) < 3:
        return float("nan")
    return float(tm_align(a[ok_a], b[ok_b], seq_a, seq_b).tm_norm_chain2)


def structure_evaluation(structures: "list[str | Path | Protein]", template: Protein | None = None,
                         max_pairs: int | None = 500) -> dict:
    """SS strings from the structures of one template's designs and their TM-score diversity.

    Args:
        structures: the designs' structures (PDB/mmCIF paths or proteins), in design order.
        template: the template structure (for TM to template); None skips it.
        max_pairs: TM-score diversity on at most this many random pairs.

    Returns:
        ``ss3`` (per-residue 3-state DSSP string per design), ``ss8``, ``proteins``, ``tm_diversity`` (mean
        pairwise TM-score, NaN for < 2 designs), ``tm_to_template`` (list, empty without template).
    """
    proteins = [_as_protein(s) for s in structures]
    cas, seqs = [], []
    for p in proteins:  # TM-align needs finite coordinates: residues without a C-alpha are left out
        ok = np.isfinite(p.ca).all(axis=1)
        cas.append(np.asarray(p.ca[ok], dtype=float))
        seqs.append("".join(c for c, k in zip(p.sequence, ok) if k))
    return {"ss3": [p.ss3 for p in proteins], "ss8": [p.ss8 for p in proteins], "proteins": proteins,
            "tm_diversity": tm_diversity(cas, seqs, max_pairs=max_pairs),
            "tm_to_template": [tm_to_template(p, template) for p in proteins] if template is not None else []}
