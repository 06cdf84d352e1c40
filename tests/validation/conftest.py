from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "data" / "validation"


@pytest.fixture(scope="session")
def handmade():
    from molgen.data.io import read_molecules

    mols, _ = read_molecules(DATA / "handmade.sdf")
    return {m.name: m for m in mols}
