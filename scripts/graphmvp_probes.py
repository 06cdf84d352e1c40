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


def mean_auc(labels: np.ndarray, probs: np.ndarray) -> float:
    from molgen.models.graphmvp.classifier import mean_roc_auc

    return mean_roc_auc(labels, probs)[0]


def linear_probe(x: np.ndarray, y: np.ndarray, split) -> tuple[float, float]:
    """(validation, test) ROC-AUC of a logistic regression whose C is chosen on the validation split."""
    from molgen.models.graphmvp.baselines import fit_per_task
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, va, te = split
    best, best_c = -1.0, 1.0
    for c in (0.001, 0.01, 0.1, 1.0, 10.0):
        make = lambda: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))  # noqa: E731
        score = mean_auc(y[va], fit_per_task(make, x[tr], y[tr], [x[va]])[0])
        if score > best:
            best, best_c = score, c
    make = lambda: make_pipeline(StandardScaler(), LogisticRegression(C=best_c, max_iter=2000))  # noqa: E731
    return best, mean_auc(y[te], fit_per_task(make, x[tr], y[tr], [x[te]])[0])


def untrained_like(encoder, seed: int = 0):
    """The control a probe needs: the same GIN with a fresh (seeded) initialisation."""
    import copy

    import torch

    from molgen.data.moleculenet import GIN_FEATURES
    from molgen.nn.gin import GIN

    control = copy.deepcopy(encoder)
    torch.manual_seed(seed)
    control.gin = GIN(encoder.gin.num_layers, encoder.gin.emb_dim, **GIN_FEATURES)
    return control


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", default="graphmvp-pretrained")
    ap.add_argument("--sets", default="bbbp,bace")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "moleculenet"))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--readouts", default="default",
                    help="comma-separated embed() readouts (mean, layers-sum, layers-mean-sum), 'all', or 'default'")
    ap.add_argument("--control", action="store_true", help="also probe the same GIN untrained (seeded init)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    import molgen
    from sklearn.ensemble import HistGradientBoostingClassifier

    from molgen.data.moleculenet import load_moleculenet, scaffold_split
    from molgen.models.graphmvp.baselines import ecfp, fit_per_task, random_forest
    from molgen.nn.gin import READOUTS
    from molgen.settings import quiet_rdkit

    encoder = molgen.load(a.encoder)
    readouts = {"default": [None], "all": list(READOUTS)}.get(a.readouts, a.readouts.split(","))
    encoders = {"encoder": encoder, **({"untrained GIN": untrained_like(encoder)} if a.control else {})}
    seeds = [int(s) for s in a.seeds.split(",")]
    for name in a.sets.split(","):
        with quiet_rdkit():   # RDKit's per-molecule parser warnings (e.g. explicit H without neighbours)
            data = load_moleculenet(name, a.root)
            split = scaffold_split(data.smiles)
            feats = {}
            for label, enc in encoders.items():
                for r in readouts:
                    kw = {} if r is None else {"readout": r}
                    feats[f"{label} (frozen{'' if r is None else ', ' + r})"] = enc.embed(data.smiles, **kw).numpy()
            feats.update({"atom counts": atom_counts(data.smiles), "ECFP4 (2048)": ecfp(data.smiles)})
        y = np.asarray(data.labels, dtype=float)
        probes = {k: linear_probe(x, y, split) for k, x in feats.items()}
        rows = [(f"linear probe: {k}", [test], valid) for k, (valid, test) in probes.items()]
        fp = feats["ECFP4 (2048)"]
        tr, _, te = split
        rf = [mean_auc(y[te], fit_per_task(random_forest(s, 500, a.threads), fp[tr], y[tr], [fp[te]])[0])
              for s in seeds]
        gb = [mean_auc(y[te], fit_per_task(lambda: HistGradientBoostingClassifier(random_state=s), fp[tr], y[tr],
                                           [fp[te]])[0]) for s in seeds]
        rows += [("ECFP4 + random forest (500 trees)", rf, None), ("ECFP4 + gradient boosting", gb, None)]
        print(f"\n{name}: {len(data)} molecules, {len(data.tasks)} task(s), scaffold split "
              f"{len(split[0])}/{len(split[1])}/{len(split[2])}; encoder {a.encoder}")
        print("| model | test ROC-AUC (%) | per seed | probe's validation ROC-AUC (%) |\n|---|---|---|---|")
        for label, vals, valid in rows:
            print(f"| {label} | {100 * np.mean(vals):.1f} | {', '.join(f'{100 * v:.1f}' for v in vals)} | "
                  f"{'' if valid is None else f'{100 * valid:.1f}'} |")


if __name__ == "__main__":
    main()
