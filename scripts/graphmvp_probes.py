"""What a pretrained GraphMVP encoder is worth next to what chemists use: probes and fingerprint baselines.

    python scripts/graphmvp_probes.py [--encoder graphmvp-pretrained] [--sets bbbp,bace]
                                      [--root ../shared/data/moleculenet] [--seeds 0,1,2] [--threads 2]

On each set's scaffold split (molgen.data.moleculenet.scaffold_split, the paper's), test ROC-AUC (mean over tasks
with both classes in the test split) of:
* linear probes (logistic regression, features standardised, C chosen on the validation split from
  0.001-10) on (a) the encoder's frozen embeddings, (b) atom counts alone (number of atoms of each element,
  heavy atoms, hydrogens, rings: what "the encoder learned more than size" is measured against), (c) Morgan
  fingerprints (ECFP4: radius 2, 2048 bits);
* the baseline a chemist tries first: ECFP4 + random forest (500 trees), and ECFP4 + gradient boosting
  (scikit-learn's HistGradientBoostingClassifier), one model per task, over ``--seeds``.
Prints one Markdown table per set; needs scikit-learn (`pip install scikit-learn`).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

ELEMENTS = ("C", "N", "O", "F", "P", "S", "Cl", "Br", "I", "B", "Si", "Se", "Na", "K", "other")


def atom_counts(smiles: list[str]) -> np.ndarray:
    from rdkit import Chem

    rows = []
    for s in smiles:
        m = Chem.MolFromSmiles(s)
        counts = dict.fromkeys(ELEMENTS, 0)
        for a in m.GetAtoms():
            sym = a.GetSymbol()
            counts[sym if sym in counts else "other"] += 1
        rows.append([*counts.values(), m.GetNumHeavyAtoms(), sum(a.GetTotalNumHs() for a in m.GetAtoms()),
                     m.GetRingInfo().NumRings()])
    return np.asarray(rows, dtype=float)


def morgan(smiles: list[str], radius: int = 2, bits: int = 2048) -> np.ndarray:
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    return np.stack([gen.GetFingerprintAsNumPy(Chem.MolFromSmiles(s)).astype(np.float32) for s in smiles])


def _auc(y: np.ndarray, p: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    ok = ~np.isnan(y)
    if ok.sum() < 2 or len(np.unique(y[ok])) < 2:
        return None
    return float(roc_auc_score(y[ok], p[ok]))


def mean_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    vals = [_auc(labels[:, t], probs[:, t]) for t in range(labels.shape[1])]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else float("nan")


def fit_per_task(make, x_tr, y_tr, x_te) -> np.ndarray:
    """One classifier per task on the labelled training rows; probabilities on the test rows (0.5 where a task
    has one class in training)."""
    out = np.full((len(x_te), y_tr.shape[1]), 0.5)
    for t in range(y_tr.shape[1]):
        ok = ~np.isnan(y_tr[:, t])
        if len(np.unique(y_tr[ok, t])) < 2:
            continue
        out[:, t] = make().fit(x_tr[ok], y_tr[ok, t].astype(int)).predict_proba(x_te)[:, 1]
    return out


def linear_probe(x: np.ndarray, y: np.ndarray, split) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, va, te = split
    best, best_c = -1.0, 1.0
    for c in (0.001, 0.01, 0.1, 1.0, 10.0):
        make = lambda: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))  # noqa: E731
        score = mean_auc(y[va], fit_per_task(make, x[tr], y[tr], x[va]))
        if score > best:
            best, best_c = score, c
    make = lambda: make_pipeline(StandardScaler(), LogisticRegression(C=best_c, max_iter=2000))  # noqa: E731
    return mean_auc(y[te], fit_per_task(make, x[tr], y[tr], x[te]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="graphmvp-pretrained")
    ap.add_argument("--sets", default="bbbp,bace")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "moleculenet"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    import molgen
    from molgen.data.moleculenet import load_moleculenet, scaffold_split
    from molgen.settings import quiet_rdkit
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier

    encoder = molgen.load(a.encoder)
    seeds = [int(s) for s in a.seeds.split(",")]
    for name in a.sets.split(","):
        with quiet_rdkit():   # RDKit's per-molecule parser warnings (e.g. explicit H without neighbours)
            data = load_moleculenet(name, a.root)
            split = scaffold_split(data.smiles)
            feats = {"encoder (frozen)": encoder.embed(data.smiles).numpy(), "atom counts": atom_counts(data.smiles),
                     "ECFP4 (2048)": morgan(data.smiles)}
        y = np.asarray(data.labels, dtype=float)
        rows = [(f"linear probe: {k}", [linear_probe(x, y, split)]) for k, x in feats.items()]
        fp = feats["ECFP4 (2048)"]
        tr, _, te = split
        rf = [mean_auc(y[te], fit_per_task(lambda: RandomForestClassifier(500, n_jobs=a.threads, random_state=s),
                                           fp[tr], y[tr], fp[te])) for s in seeds]
        gb = [mean_auc(y[te], fit_per_task(lambda: HistGradientBoostingClassifier(random_state=s), fp[tr], y[tr],
                                           fp[te])) for s in seeds]
        rows += [("ECFP4 + random forest (500 trees)", rf), ("ECFP4 + gradient boosting", gb)]
        print(f"\n{name}: {len(data)} molecules, {len(data.tasks)} task(s), scaffold split "
              f"{len(split[0])}/{len(split[1])}/{len(split[2])}; encoder {a.encoder}")
        print("| model | test ROC-AUC (%) | per seed |\n|---|---|---|")
        for label, vals in rows:
            print(f"| {label} | {100 * np.mean(vals):.1f} | {', '.join(f'{100 * v:.1f}' for v in vals)} |")


if __name__ == "__main__":
    main()
