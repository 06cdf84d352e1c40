"""Library messages are captured and counted inside the block, and every setting is restored after it."""
import logging
import warnings

import pytest
from rdkit import Chem

from molgen.console import capture_library_output

PENTAVALENT_CARBON = "C(C)(C)(C)(C)C"


def test_rdkit_lightning_and_python_warnings_are_counted_not_printed(capfd):
    lightning = logging.getLogger("pytorch_lightning")
    lightning_level = lightning.level
    lightning.setLevel(logging.INFO)
    try:
        with capture_library_output(show=False) as captured:
            assert Chem.MolFromSmiles(PENTAVALENT_CARBON) is None
            warnings.warn("a library deprecation", DeprecationWarning)
            lightning.info("GPU available: False, used: False")
    finally:
        lightning.setLevel(lightning_level)
    out, err = capfd.readouterr()
    assert "Explicit valence" not in out + err and "deprecation" not in out + err and "GPU" not in out + err
    assert captured.total == 3, captured.summary()
    assert any("Explicit valence" in e for e in captured.examples)


def test_everything_is_restored_after_the_block_even_on_error(capfd):
    logger = logging.getLogger("rdkit")
    handlers, propagate = list(logger.handlers), logger.propagate
    filters = list(warnings.filters)
    with pytest.raises(RuntimeError):
        with capture_library_output(show=False):
            raise RuntimeError("a stage failed")
    assert logger.handlers == handlers and logger.propagate == propagate and warnings.filters == filters
    capfd.readouterr()
    assert Chem.MolFromSmiles(PENTAVALENT_CARBON) is None
    assert "Explicit valence" in capfd.readouterr().err   # RDKit prints to its own stream again


def test_show_lets_everything_through(capfd):
    with capture_library_output(show=True) as captured:
        Chem.MolFromSmiles(PENTAVALENT_CARBON)
    assert captured.total == 0 and "Explicit valence" in capfd.readouterr().err
