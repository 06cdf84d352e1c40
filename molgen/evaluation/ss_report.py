"""The CPDiffusion-SS evaluation table and report: per-sequence metrics, per-method means, Table I beside them."""
from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np

from molgen.data.proteins import element_string
from molgen.evaluation.ss_metrics import (consistency, novelty, pairwise_identity, sequence_identity,
                                          ss_composition_mse, ss_identity)
from molgen.evaluation.ss_structures import structure_evaluation
from molgen.formatting import markdown_table, mean_std

# Table I of Hu et al. 2024 (riacd/CPDiffusion-SS img/result.png): 50 CATH 4.3 test templates x 200 designs,
# ESMFold + DSSP; mean (std over templates). Columns: TM_new, RMSD, Seq.ID, TM_wt, ID, ID_max, MSE,
# ID w/o loop, ID_max w/o loop, MSE w/o loop.
PAPER_TABLE_I = {
    "vanilla decoder": ["0.27", "3.98", "6.31", "0.23", "66.28", "76.80", "6.16", "56.82", "70.31", "23.59"],
    "ESM2": ["0.26", "3.15", "19.48", "0.29", "45.25", "53.98", "7.31", "35.17", "44.13", "29.26"],
    "ProstT5": ["0.28", "6.65", "15.78", "0.12", "74.31", "82.52", "4.19", "66.61", "77.24", "17.32"],
    "ESM-IF1": ["0.29", "4.97", "7.46", "0.20", "78.53", "84.88", "3.34", "74.44", "82.55", "14.91"],
    "ProteinMPNN": ["0.35", "4.47", "76.50", "0.19", "56.00", "62.56", "6.46", "47.28", "53.73", "17.77"],
    "RFdiffusion": ["0.35", "3.96", "17.35", "0.16", "75.36", "78.76", "2.63", "69.85", "73.66", "12.33"],
    "ESM3": ["0.29", "5.22", "7.01", "0.19", "80.61", "86.27", "2.27", "76.01", "82.12", "8.37"],
    "CPDiffusion-SS": ["0.30", "5.69", "7.08", "0.16", "81.57", "86.95", "1.56", "77.84", "84.43", "6.61"],
}
CONSISTENCY_KEYS = ("ID", "ID_max", "MSE", "ID_noloop", "ID_max_noloop", "MSE_noloop")
STRUCTURE_KEYS = ["tm_diversity", "tm_to_template", "plddt"]
LABELS = {"cpdiffusion_ss": "CPDiffusion-SS (molgen)", "vanilla_decoder": "vanilla decoder (random latents)",
          "ss_composition": "SS-composition sampler", "native": "native template sequence"}


def _columns(with_structures: bool) -> list[str]:
    """The per-method columns of ``table.csv`` and of the report's table, in order."""
    return [*CONSISTENCY_KEYS, "seq_id_diversity", "novelty", "length_ratio", "recovery", "mpnn_score",
            *(STRUCTURE_KEYS if with_structures else []), "seconds"]


def label(method: str) -> str:
    if method.startswith("proteinmpnn_") and "_t" in method:   # proteinmpnn_<weights>_t<temperature>
        weights, temp = method[len("proteinmpnn_"):].rsplit("_t", 1)
        return f"ProteinMPNN {weights}, T = {temp}"
    return LABELS.get(method, method)


def recovery(design: str, native: str) -> float:
    """Sequence recovery (%): identical positions when the lengths agree (the usual definition), else the
    identity of a global alignment (:func:`~molgen.evaluation.ss_metrics.sequence_identity`)."""
    if len(design) == len(native):
        return 100.0 * float(np.mean([a == b for a, b in zip(design, native)])) if native else float("nan")
    return sequence_identity(design, native)


def _finite_mean(values) -> float:
    v = np.asarray(values, dtype=float)
    return float(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else float("nan")


def evaluate_samples(rows: list[dict], designer, vcfg, out_dir: Path, train_metrics: dict | None = None,
                     structures: dict[tuple[str, str], Path] | None = None, templates: dict | None = None,
                     oracle: str | None = None, plddt: dict[tuple[str, str], float] | None = None,
                     scorer=None) -> dict:
    """Score sampled designs; writes ``metrics.csv``, ``table.csv`` and ``report.md`` into ``out_dir``.

    Args:
        rows: sample records (``samples.jsonl``: annotations + ``id`` + ``sequence``).
        designer: the loaded designer (``.oracle`` with ``predict_ss3``, ``.train_sequences``).
        vcfg: the ``validate`` config (``top_k``, ``max_pairs``, ``novelty_per_template``, ``tm_max_pairs``).
        structures: (method, record id) -> structure file of the design (ESMFold or given PDBs); the designs'
            SS then comes from DSSP of these structures (replacing the sequence predictor's) and TM-score
            diversity and TM to template are computed. A native template sequence is scored when
            ``("native", "<template>_native")`` has a structure. None: the SS predicted at sampling time
            (``predicted_ss3``) is used.
        templates: template name -> :class:`~molgen.data.proteins.Protein` (TM to template; the backbone the
            MPNN score threads every design on, ``validate.mpnn_score``).
        oracle: the oracle's name for the report (default: the one named in the scored records).
        plddt: (method, record id) -> mean pLDDT of its predicted structure (reported when given).
        scorer: the designability scorer (``.score(coords, sequences, orders, seed)`` and ``.name``, e.g.
            :class:`molgen.models.proteinmpnn.ProteinMPNN`) applied on ``templates``' backbones; None: not scored.
    """
    out_dir = Path(out_dir)
    by = defaultdict(list)
    for r in rows:
        by[(r["method"], r["template"])].append(r)
    n_templates = len({r["template"] for r in rows})
    # default: the oracle that scored the designs at sampling time (recorded in every scored record)
    oracle = oracle or next((r["oracle"] for r in rows if r.get("oracle")), "the designer's SS oracle")
    plddt = plddt or {}
    scorer = scorer if templates else None
    # the oracle on the native template sequences: the ceiling an oracle-based consistency can reach
    natives = list({r["template"]: r for r in rows}.values())
    if structures is None:
        pred = designer.oracle.predict_ss3([t["template_sequence"] for t in natives]) if designer.oracle else []
    else:
        natives = [t for t in natives if ("native", f"{t['template']}_native") in structures]
        pred = [None] * len(natives)
    for t, ss in zip(natives, pred):
        by[("native", t["template"])].append({**t, "method": "native", "sequence": t["template_sequence"],
                                              "predicted_ss3": ss, "predicted_elements": element_string(ss),
                                              "id": f"{t['template']}_native", "seconds": 0.0})
    per_method: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    mismatched = 0  # structures whose residues are not the design's sequence (a mix-up in given structures)
    seq_rows = []
    rng = np.random.default_rng(0)
    for (method, tpl), recs in sorted(by.items()):
        plan = recs[0]["ss_plan"]
        tm_div, tm_wt = float("nan"), [float("nan")] * len(recs)
        if structures is not None:  # SS from the designs' structures (DSSP), TM-score diversity
            ev = structure_evaluation([structures[(method, r["id"])] for r in recs], (templates or {}).get(tpl),
                                      max_pairs=int(vcfg.get("tm_max_pairs", 500)))
            recs = by[(method, tpl)] = [{**r, "predicted_ss3": ss, "predicted_elements": element_string(ss)}
                                        for r, ss in zip(recs, ev["ss3"])]
            mismatched += sum(p.sequence != r["sequence"] for p, r in zip(ev["proteins"], recs))
            tm_div = ev["tm_diversity"] if method != "native" else float("nan")
            tm_wt = ev["tm_to_template"] or tm_wt
            per_method[method]["tm_diversity"].append(tm_div)
            per_method[method]["tm_to_template"].append(_finite_mean(tm_wt))
            per_method[method]["plddt"].append(_finite_mean([plddt.get((method, r["id"]), float("nan")) for r in recs]))
        cons = consistency([r["predicted_ss3"] for r in recs], recs[0]["template_ss3"], int(vcfg.top_k))
        seqs = [r["sequence"] for r in recs]
        div = pairwise_identity(seqs, int(vcfg.max_pairs)) if method != "native" else float("nan")
        k = min(len(seqs), int(vcfg.novelty_per_template))
        pick = rng.choice(len(seqs), size=k, replace=False) if k else []
        nov = novelty([seqs[i] for i in pick], designer.train_sequences) if designer.train_sequences else []
        nov_by = dict(zip(pick, nov))
        for key in CONSISTENCY_KEYS:
            per_method[method][key].append(cons[key])
        per_method[method]["seq_id_diversity"].append(div)
        per_method[method]["novelty"].append(float(np.mean(nov)) if len(nov) else float("nan"))
        per_method[method]["length_ratio"].append(np.mean([len(s) for s in seqs]) / len(recs[0]["template_ss3"]))
        per_method[method]["seconds"].append(sum(r.get("seconds", 0.0) for r in recs))
        rec = [recovery(s, recs[0]["template_sequence"]) for s in seqs]
        per_method[method]["recovery"].append(float(np.mean(rec)))
        mpnn = np.full(len(seqs), np.nan)
        if scorer is not None and tpl in templates:  # the first mpnn_per_template designs (one decoding order each)
            k = min(len(seqs), int(vcfg.get("mpnn_per_template", 10)))
            mpnn[:k] = scorer.score(templates[tpl].coords, seqs[:k], orders=1, seed=0)
        per_method[method]["mpnn_score"].append(_finite_mean(mpnn))
        for i, r in enumerate(recs):
            e = r["predicted_elements"]
            seq_rows.append({"id": r["id"], "method": method, "template": tpl, "length": len(r["sequence"]),
                             "plan": plan, "predicted_elements": e, "ss_identity": ss_identity(e, plan),
                             "ss_identity_noloop": ss_identity(e, plan, True),
                             "mse_x100": 100 * ss_composition_mse(e, plan),
                             "mse_noloop_x100": 100 * ss_composition_mse(e, plan, True),
                             "novelty_max_identity": nov_by.get(i, float("nan")), "recovery": rec[i],
                             "mpnn_score": float(mpnn[i]), "tm_to_template": tm_wt[i],
                             "plddt": plddt.get((method, r["id"]), float("nan")), "sequence": r["sequence"]})
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(seq_rows[0]))
        w.writeheader()
        w.writerows(seq_rows)
    cols = _columns(structures is not None)
    order = [m for m in ("cpdiffusion_ss", *sorted(k for k in per_method if k.startswith("cpdiffusion_ss_")),
                         "vanilla_decoder", "ss_composition",
                         *sorted(k for k in per_method if k.startswith("proteinmpnn_")), "native") if m in per_method]
    with open(out_dir / "table.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["method", "templates", *cols])
        for m in order:
            w.writerow([m, len(per_method[m]["ID"]), *[mean_std(per_method[m][c]) for c in cols]])
    metrics = {f"{m}/{c}": float(np.nanmean(per_method[m][c])) for m in order for c in cols
               if np.isfinite(per_method[m][c]).any()}
    metrics["mpnn_scorer"] = scorer.name if scorer is not None else "not computed (ProteinMPNN not installed)"
    if structures is not None:
        metrics["structures_sequence_mismatch"] = mismatched
        if mismatched:
            oracle += (f" ({mismatched} of {sum(len(v) for v in by.values())} structures do not carry their "
                       "design's sequence)")
    _write_report(out_dir, order, per_method, by, train_metrics or {}, rows, oracle, structures is not None,
                  metrics["mpnn_scorer"])
    metrics["templates"] = n_templates
    metrics["oracle"] = oracle
    return metrics


def _write_report(out_dir: Path, order, per_method, by, train_metrics: dict, rows, oracle: str,
                  with_structures: bool, scorer: str = "") -> None:
    n_t = len({r["template"] for r in rows})
    n = max(len(v) for (m, _), v in by.items() if m != "native")
    if with_structures:
        head = (f"Oracle: **{oracle}**: the designs' SS is DSSP (mdtraj, the templates' code) of their structures. "
                "TM div = mean pairwise TM-score among a template's design structures (tmtools; lower = more "
                "diverse); TM_wt = TM-score of a design to its template (normalised by the template length); "
                "pLDDT = mean C-alpha B-factor of the structures (ESMFold's confidence).")
    else:
        q3 = train_metrics.get("oracle_q3_test")
        head = (f"Oracle: **{oracle}**" + (f", Q3 on the test chains {q3:.1%}" if q3 is not None else "") +
                ". ESMFold (the paper's route, `validate.oracle=esmfold`) was not used; TM-score diversity needs "
                "design structures (`validate.oracle=esmfold` or `validate.oracle=structures`): not computed.")
    cols = _columns(with_structures)
    ss_heads = ["ID ↑", "ID_max ↑", "MSE ↓", "ID w/o loop ↑", "ID_max w/o loop ↑", "MSE w/o loop ↓",
                "Seq.ID % ↓"]
    L = [head, "",
         f"{n_t} test templates x {n} designs per method (the paper: 50 x 200). Element-level SS metrics "
         "exactly as the paper's metrics.py; MSE x 100. Mean (std over templates). Seq.ID = mean pairwise "
         "identity among a template's designs (lower = more diverse); novelty = mean highest identity to a "
         "training sequence (lower = more novel); recovery = % of the native template sequence recovered "
         "(per position when the lengths agree, else by global alignment); MPNN score = mean negative "
         f"log-likelihood per residue of the design threaded on the template backbone ({scorer}; one random "
         "decoding order, the first `validate.mpnn_per_template` designs per template; lower = more designable, "
         "n/a when the design's length differs from the template's).", "",
         markdown_table(["method", *ss_heads, "novelty % ↓", "length / template", "recovery %", "MPNN score ↓",
                         *(["TM div ↓", "TM_wt", "pLDDT"] if with_structures else []), "s / template"],
                        [[label(m), *(mean_std(per_method[m][c]) for c in cols)] for m in order])]
    L += ["", "Paper, Table I (ESMFold + DSSP oracle, 50 CATH 4.3 templates x 200, full-size models), for reference:",
          "", markdown_table(["method", *ss_heads, "TM_new ↓", "TM_wt ↓"],  # PAPER_TABLE_I's column order
                             [[name, *(v[k] for k in (4, 5, 6, 7, 8, 9, 2, 0, 3))]
                              for name, v in PAPER_TABLE_I.items()])]
    L += ["", "SS plan of the template (per residue, DSSP) next to the oracle's SS of the first designs:", ""]
    shown = sorted({r["template"] for r in rows})[:3]
    for tpl in shown:
        plan = by[("cpdiffusion_ss", tpl)][0] if ("cpdiffusion_ss", tpl) in by else None
        if plan is None:
            continue
        L += [f"**{tpl}** (plan `{plan['ss_plan']}`)", "", "```", f"template   {plan['template_ss3']}",
              f"native seq {plan['template_sequence']}"]
        for m in ("cpdiffusion_ss", "vanilla_decoder", "ss_composition"):
            for r in by.get((m, tpl), [])[:2]:
                L.append(f"{m[:10]:<10s} {r['predicted_ss3']}")
                L.append(f"{'':<10s} {r['sequence']}")
        L += ["```", ""]
    L.append("Per-sequence metrics: [metrics.csv](./metrics.csv); per method: [table.csv](./table.csv).")
    (out_dir / "report.md").write_text("\n".join(L) + "\n")
