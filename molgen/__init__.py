"""molgen: generative modeling of molecules and proteins.

Five stage-wise pipelines (featurize -> train -> sample -> validate) behind one CLI (``molgen run``) and
one Python API: :func:`molgen.load` returns a trained model, :func:`molgen.validate` judges molecules.
"""
__version__ = "0.1.0"

from molgen.api import load, list_checkpoints  # noqa: E402
from molgen.data.molecule import Molecule  # noqa: E402

__all__ = ["load", "list_checkpoints", "Molecule", "__version__"]


def __getattr__(name):  # molgen.validation is heavy (RDKit, PoseBusters): import on first use
    if name == "validate":
        from molgen.validation import validate

        return validate
    raise AttributeError(name)
