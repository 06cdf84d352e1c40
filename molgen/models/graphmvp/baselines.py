"""The baseline a chemist tries first on a MoleculeNet task: ECFP4 fingerprints and a random forest per task.

Every GraphMVP table sets the learned encoders beside it (``finetune.init=[..., ecfp_rf]``): the same scaffold
split, the same seeds (the forest's ``random_state``), the same ROC-AUC (mean over tasks with both classes,
:func:`molgen.models.graphmvp.classifier.mean_roc_auc`). Needs scikit-learn (``pip install 'molgen[baselines]'``).

Example:
    >>> x = ecfp(["CCO", "c1ccccc1"])
    >>> x.shape, x.dtype.name
    ((2, 2048), 'uint8')
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from molgen.errors import ConfigError, DataError


def ecfp(smiles: Sequence[str], radius: int = 2, bits: int = 2048) -> np.ndarray:
    """Morgan fingerprints (ECFP4 for ``radius=2``) as a ``[n, bits]`` 0/1 array; a SMILES RDKit cannot parse is
    one error naming it and its index."""
    from rdkit.Chem import rdFingerprintGenerator

    from molgen.data.moleculenet import parse_smiles

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    rows = []
    for i, s in enumerate(smiles):
        mol = parse_smiles(s)
        if mol is None:
            raise DataError(f"SMILES #{i} {s!r} cannot be parsed by RDKit")
        rows.append(gen.GetFingerprintAsNumPy(mol).astype(np.uint8))
    return np.stack(rows) if rows else np.zeros((0, bits), np.uint8)


def fit_per_task(make: Callable, x_train: np.ndarray, y_train: np.ndarray,
                 x_eval: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One classifier per task (``make()`` builds it) on that task's labelled training rows (NaN = missing);
    positive-class probabilities ``[n, T]`` on each array of ``x_eval`` (0.5 where a task has one class in
    training, as a constant score)."""
    outs = [np.full((len(x), y_train.shape[1]), 0.5) for x in x_eval]
    for t in range(y_train.shape[1]):
        ok = ~np.isnan(y_train[:, t])
        if len(np.unique(y_train[ok, t])) < 2:
            continue
        clf = make().fit(x_train[ok], y_train[ok, t].astype(int))
        for out, x in zip(outs, x_eval):
            out[:, t] = clf.predict_proba(x)[:, 1]
    return outs


def random_forest(seed: int, n_trees: int = 500, n_jobs: int | None = None) -> Callable:
    """A factory of scikit-learn random forests (``n_trees`` trees, ``random_state=seed``)."""
    try:
        from sklearn.ensemble import RandomForestClassifier
    except ImportError as err:  # pragma: no cover - depends on the installation
        raise ConfigError("the ECFP4 + random forest baseline (finetune.init=ecfp_rf) needs scikit-learn: "
                          "pip install 'molgen[baselines]'") from err
    return lambda: RandomForestClassifier(n_estimators=n_trees, random_state=seed, n_jobs=n_jobs)


def ecfp_random_forest(x: np.ndarray, labels: np.ndarray, split: tuple, seed: int, n_trees: int = 500,
                       n_jobs: int | None = None) -> dict:
    """A random forest per task on fingerprints ``x`` (:func:`ecfp` of the set's SMILES, computed once for every
    seed) trained on ``split[0]``: ``val_roc_auc``, ``test_roc_auc`` and the test probabilities (``test_probs``,
    ``[len(split[2]), T]``)."""
    from molgen.models.graphmvp.classifier import mean_roc_auc

    train, valid, test = (np.asarray(s) for s in split)
    labels = np.asarray(labels, dtype=float)
    p_valid, p_test = fit_per_task(random_forest(seed, n_trees, n_jobs), x[train], labels[train],
                                   [x[valid], x[test]])
    return {"val_roc_auc": mean_roc_auc(labels[valid], p_valid)[0],
            "test_roc_auc": mean_roc_auc(labels[test], p_test)[0], "test_probs": p_test}
