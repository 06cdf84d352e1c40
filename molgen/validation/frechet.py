"""Fréchet ChemNet Distance (Preuer et al. 2018, https://doi.org/10.1021/acs.jcim.8b00234) of generated SMILES
against a reference set, with the ``fcd`` package (PyPI ``fcd`` >= 1.2, PyTorch port of the original).

FCD = |mu_g - mu_r|^2 + tr(S_g + S_r - 2 (S_g S_r)^(1/2)) over ChemNet's 512 penultimate activations. The
ChemNet weights (``ChemNet_v0.13_pretrained.pt``) ship inside the ``fcd`` wheel, so this works offline; when
``fcd`` is not installed, the metric is None and the note says why.

Protocol (stated in the metrics and the report):
* generated side: the canonical non-isomeric SMILES of the largest fragment of every molecule whose largest
  fragment RDKit sanitizes (duplicates kept: FCD compares the distributions as generated);
* reference side: a fixed subset of the reference SMILES (sorted, then ``n_reference`` drawn with
  ``RandomState(seed)``; QM9's training split has 100,000), canonical non-isomeric like the generated side;
* the reference statistics (mu, Sigma) are cached in ``$MOLGEN_CACHE/fcd/`` under a hash of the exact subset and
  the ChemNet file, so repeated validations against the same reference do not run ChemNet on it again.
FCD is biased upward for small samples (the covariance estimate): compare values only at equal sample sizes.
"""
from __future__ import annotations

import hashlib
import importlib.util
import warnings
from pathlib import Path

import numpy as np

CHEMNET_FILE = "ChemNet_v0.13_pretrained.pt"
MIN_MOLECULES = 2


def fcd_unavailable() -> str | None:
    """Why FCD cannot be computed here (None: the ``fcd`` package and its shipped ChemNet weights are present)."""
    spec = importlib.util.find_spec("fcd")
    if spec is None or not spec.submodule_search_locations:
        return "the fcd package is not installed (pip install fcd; its wheel ships the ChemNet weights)"
    if not (Path(list(spec.submodule_search_locations)[0]) / CHEMNET_FILE).exists():
        return f"the installed fcd package does not ship {CHEMNET_FILE} (it would need a download)"
    return None


def reference_subset(smiles, n_reference: int = 10_000, seed: int = 0) -> list[str]:
    """The fixed reference sample: ``smiles`` sorted, then ``n_reference`` drawn without replacement with
    ``np.random.RandomState(seed)`` (all of them when there are fewer), returned sorted."""
    pool = sorted(set(smiles))
    if len(pool) <= n_reference:
        return pool
    pick = np.random.RandomState(seed).choice(len(pool), n_reference, replace=False)
    return [pool[i] for i in sorted(pick)]


def _activations(smiles: list[str]) -> np.ndarray:
    """ChemNet activations ``[n, 512]`` (in-process data loading: no worker processes)."""
    import warnings

    import fcd

    with warnings.catch_warnings():                        # fcd 1.2.2 calls the deprecated np.row_stack
        warnings.simplefilter("ignore", DeprecationWarning)
        return fcd.get_predictions(fcd.load_ref_model(), smiles, n_jobs=0)


def statistics(smiles: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[512]`` and covariance ``[512, 512]`` of ChemNet activations of ``smiles``."""
    act = _activations(smiles).astype(np.float64)
    return act.mean(0), np.cov(act.T)


def reference_statistics(subset: list[str], cache: Path | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """(mu, Sigma, loaded_from_cache) of the reference ``subset``; cached as ``.npz`` under ``cache``."""
    if cache is None:
        from molgen.validation.reference import cache_dir

        cache = cache_dir() / "fcd"
    h = hashlib.sha256(("\n".join(subset) + "\n" + CHEMNET_FILE).encode()).hexdigest()[:20]
    path = Path(cache) / f"reference_{len(subset)}_{h}.npz"
    if path.exists():
        with np.load(path) as z:
            return z["mu"], z["sigma"], True
    mu, sigma = statistics(subset)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, mu=mu, sigma=sigma)
    tmp.replace(path)
    return mu, sigma, False


def frechet_chemnet_distance(generated: list[str], reference, n_reference: int = 10_000, seed: int = 0,
                             cache: Path | None = None) -> dict:
    """FCD of ``generated`` SMILES (canonical, duplicates kept) against a reference SMILES collection.

    Returns:
        ``fcd`` (None when it cannot be computed), ``fcd_n_generated``, ``fcd_n_reference``,
        ``fcd_reference_cached`` and ``fcd_note`` (the protocol, or why it was not computed).
    """
    why = fcd_unavailable()
    if why is not None:
        return {"fcd": None, "fcd_note": f"FCD not computed: {why}."}
    from fcd import calculate_frechet_distance

    subset = reference_subset(reference, n_reference, seed)
    generated = list(generated)
    if len(generated) < MIN_MOLECULES or len(subset) < MIN_MOLECULES:
        return {"fcd": None, "fcd_n_generated": len(generated), "fcd_n_reference": len(subset),
                "fcd_note": f"FCD not computed: it needs at least {MIN_MOLECULES} valid generated and "
                            f"{MIN_MOLECULES} reference SMILES (got {len(generated)} and {len(subset)})."}
    mu_r, sigma_r, cached = reference_statistics(subset, cache)
    mu_g, sigma_g = statistics(generated)
    with warnings.catch_warnings():
        # scipy's sqrtm warns on the (near-)singular covariances of small samples; fcd then adds eps * I
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        value = float(calculate_frechet_distance(mu_g, sigma_g, mu_r, sigma_r))
    note = (f"FCD (fcd package, ChemNet v0.13 weights shipped in the wheel) of {len(generated)} valid generated "
            f"molecules (largest fragment, canonical SMILES without stereo, duplicates kept) against "
            f"{len(subset)} reference SMILES (fixed subset, seed {seed}; statistics "
            f"{'read from the cache' if cached else 'computed and cached'}). Lower is closer; FCD grows as "
            f"samples shrink, so compare values at equal sample sizes.")
    return {"fcd": value, "fcd_n_generated": len(generated), "fcd_n_reference": len(subset),
            "fcd_reference_cached": cached, "fcd_note": note}
