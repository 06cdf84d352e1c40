"""ESMFold as the SS oracle of CPDiffusion-SS (the paper's route): fold each design, write its PDB.

ESMFold (Lin et al. 2023, Science 379:1123, ``esm.pretrained.esmfold_v1()`` of fair-esm) is used only when
everything it needs is already on this machine; nothing is ever downloaded at run time:

* the ``esm`` package (PyPI ``fair-esm``) and ESMFold's extra dependencies: ``pip install "fair-esm[esmfold]"``
  (biopython, deepspeed, dm-tree, ml-collections, einops, ...) plus OpenFold and dllogger, which are not on
  PyPI in the version ESMFold needs (installed from git, as fair-esm's README says);
* the weights in the torch hub cache, ``<hub_dir>/checkpoints/``: ``esmfold_3B_v1.pt`` (the folding trunk) and
  ``esm2_t36_3B_UR50D.pt`` + ``esm2_t36_3B_UR50D-contact-regression.pt`` (the ESM-2 3B language model that
  ``ESMFold.__init__`` loads through ``esm.pretrained``). fair-esm fetches them with
  ``torch.hub.load_state_dict_from_url``, which reads ``<torch.hub.get_dir()>/checkpoints/<file name>`` when the
  file is there and downloads it otherwise; :func:`esmfold_missing` checks every file first, so the download
  branch is never reached. ``hub_dir`` defaults to ``torch.hub.get_dir()`` (``$TORCH_HOME/hub``, by default
  ``~/.cache/torch/hub``).

The secondary structure of the folded designs is computed from the written PDBs by
:mod:`molgen.evaluation.ss_structures` (DSSP via mdtraj, the code the data layer uses for the templates).
"""
from __future__ import annotations

import contextlib
import importlib
from pathlib import Path

from molgen.errors import MolgenError

ESMFOLD_WEIGHTS = ("esmfold_3B_v1.pt", "esm2_t36_3B_UR50D.pt", "esm2_t36_3B_UR50D-contact-regression.pt")
OPENFOLD_PIP = ("'dllogger @ git+https://github.com/NVIDIA/dllogger.git' "
                "'openfold @ git+https://github.com/aqlaboratory/openfold.git@4b41059694619831a7db195b7e0988fc4ff3a307'")
ORACLE_NAME = "ESMFold (esm.pretrained.esmfold_v1) + DSSP (mdtraj) on the predicted structures"


def default_hub_dir() -> Path:
    """The torch hub folder fair-esm reads its weights from (``torch.hub.get_dir()``)."""
    import torch

    return Path(torch.hub.get_dir())


def esmfold_missing(hub_dir: str | Path | None = None) -> list[str]:
    """What ESMFold still needs on this machine (empty list: ready); imports and file checks only.

    Args:
        hub_dir: torch hub folder holding ``checkpoints/<weights>``; None: ``torch.hub.get_dir()``.
    """
    missing: list[str] = []
    try:
        importlib.import_module("esm")
    except ImportError:
        missing.append(f'the esm package and ESMFold\'s dependencies (pip install "fair-esm[esmfold]" {OPENFOLD_PIP})')
    else:
        try:
            importlib.import_module("esm.esmfold.v1.esmfold")
        except ImportError as e:  # fair-esm without its ESMFold extras: openfold, deepspeed, dm-tree, ...
            what = e.name or str(e)
            how = f'pip install "fair-esm[esmfold]" {OPENFOLD_PIP}' if what.split(".")[0] in ("openfold", "dllogger") \
                else 'pip install "fair-esm[esmfold]"'
            missing.append(f"ESMFold's dependency '{what}' ({how})")
        except Exception as e:  # noqa: BLE001 -- e.g. an OpenFold build that does not match this torch
            missing.append(f"a working esm.esmfold ({type(e).__name__}: {str(e).splitlines()[0][:100]})")
    folder = Path(hub_dir).expanduser() if hub_dir else default_hub_dir()
    absent = [w for w in ESMFOLD_WEIGHTS if not (folder / "checkpoints" / w).is_file()]
    if absent:
        missing.append(f"weights {', '.join(absent)} in {folder / 'checkpoints'} (fetch them once with "
                       "esm.pretrained.esmfold_v1() on a machine with internet and copy them there, or point "
                       "validate.esmfold.hub_dir at a torch hub folder that has them)")
    return missing


def require_esmfold(hub_dir: str | Path | None = None) -> None:
    """Raise one :class:`MolgenError` line naming everything ESMFold lacks; return if it is ready."""
    missing = esmfold_missing(hub_dir)
    if missing:
        raise MolgenError("validate.oracle=esmfold: ESMFold is not available offline here; missing "
                          + "; ".join(missing) + ". Nothing is downloaded at run time; "
                          "validate.oracle=predictor uses the in-project SS predictor instead")


@contextlib.contextmanager
def _hub_dir(folder: Path | None):
    import torch

    old = torch.hub.get_dir()
    if folder is not None:
        torch.hub.set_dir(str(folder))
    try:
        yield
    finally:
        torch.hub.set_dir(old)


class ESMFoldOracle:
    """Fold sequences with ESMFold and write one PDB per sequence.

    Args:
        hub_dir: torch hub folder with the weights (see the module docstring); None: ``torch.hub.get_dir()``.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        chunk_size: ESMFold's axial-attention chunk size (None: unchunked; 64-128 lowers memory on long chains).
        num_recycles: recycling iterations (None: the model's default, 4).

    Raises:
        MolgenError: ESMFold, its dependencies or its weights are missing (checked before anything is loaded).
    """

    def __init__(self, hub_dir: str | Path | None = None, device: str = "auto", chunk_size: int | None = None,
                 num_recycles: int | None = None):
        import torch

        require_esmfold(hub_dir)
        import esm

        folder = Path(hub_dir).expanduser() if hub_dir else None
        with _hub_dir(folder):  # every weight file is present (checked above): fair-esm only reads them
            model = esm.pretrained.esmfold_v1()
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":  # ESMFold keeps ESM-2 in float16, which is slow or unsupported on CPUs
            model.esm.float()
        if chunk_size:
            model.set_chunk_size(int(chunk_size))
        self.model = model.eval().to(device)
        self.num_recycles = num_recycles

    def fold(self, sequences: list[str], paths: list[Path]) -> list[float]:
        """Fold each sequence into ``paths[i]`` (a PDB written atomically); returns the mean pLDDT of each.

        A PDB that already exists is kept (resuming an interrupted validation) and its pLDDT read back from
        the B-factor column (ESMFold writes per-atom pLDDT there).
        """
        import torch
        from tqdm import tqdm

        plddt = []
        for seq, path in tqdm(list(zip(sequences, paths)), desc="ESMFold"):
            path = Path(path)
            if not path.is_file():
                with torch.no_grad():
                    pdb = self.model.infer_pdb(seq, num_recycles=self.num_recycles)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(pdb)
                tmp.replace(path)
            plddt.append(mean_plddt(path))
        return plddt


def mean_plddt(path: str | Path) -> float:
    """Mean B-factor of the C-alpha atoms of a PDB file (pLDDT for ESMFold/AlphaFold models)."""
    vals = [float(line[60:66]) for line in Path(path).read_text().splitlines()
            if line.startswith("ATOM") and line[12:16].strip() == "CA"]
    return sum(vals) / len(vals) if vals else float("nan")
