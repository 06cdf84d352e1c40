"""Shared fixtures: small real molecules (RDKit ETKDG conformers, explicit H, kekulized bonds); every test starts
from seeded random number generators and from the process-wide settings the session started with, whatever ran
before it (so the outcome of a test does not depend on the test order)."""
from __future__ import annotations

import os
import random
import sys
import warnings

import numpy as np
import pytest
import pytorch_lightning  # noqa: F401 -- these two change settings of their own when first imported
import torch
import torch_geometric  # noqa: F401 -- (a logger level, TORCHINDUCTOR_CACHE_DIR): not a test's doing

from molgen.settings import rdkit_log_status, set_rdkit_log_status

QM9_LIKE_SMILES = ("CCO", "CC(=O)O", "CC#N", "OCC(F)N", "C1CC1O", "c1ccc(O)cc1", "CN=CO", "NC(=O)CF")


def embed_molecules(smiles=QM9_LIKE_SMILES, seed: int = 0):
    """Molecules with 3D coordinates from ETKDG (deterministic for a seed), as molgen Molecules."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from molgen.data.molecule import Molecule

    out = []
    for k, smi in enumerate(smiles):
        m = Chem.AddHs(Chem.MolFromSmiles(smi))
        Chem.Kekulize(m, clearAromaticFlags=True)
        assert AllChem.EmbedMolecule(m, randomSeed=seed + k) == 0
        out.append(Molecule.from_rdkit(m, name=smi, properties={"gap": 5.0 + 0.3 * k, "mu": 0.5 * k}))
    return out


@pytest.fixture(scope="session")
def real_molecules():
    return embed_molecules()


@pytest.fixture(scope="session")
def real_graphs(real_molecules):
    """A GraphDataset of the molecules above with properties (gap, mu)."""
    from molgen.data.graph import GraphDataset, MoleculeVocab

    return GraphDataset.from_molecules(real_molecules, MoleculeVocab(), ("gap", "mu"))


def noisy_flow_state(graphs, n_mol: int = 3, seed: int = 0, dtype=torch.float32):
    """A noisy PropMolFlow state of the first ``n_mol`` molecules: half-masked atom / charge tokens, symmetric
    half-masked bond tokens (dense ``[n, n]``), positions displaced by 0.3 A, one time per molecule."""
    from torch_geometric.data import Batch

    from molgen.models.propmolflow.model import bond_tokens
    from molgen.nn.molecule_net import complete_graph

    b = Batch.from_data_list([graphs[k] for k in range(n_mol)])
    g = torch.Generator().manual_seed(seed)
    n = b.num_nodes
    a = torch.where(torch.rand(n, generator=g) < 0.5, b.atom_type, torch.full_like(b.atom_type, 5))
    c = torch.where(torch.rand(n, generator=g) < 0.5, b.charge, torch.full_like(b.charge, 6))
    ei, _ = complete_graph(b.batch)
    dense = torch.zeros(n, n, dtype=torch.long)
    dense[ei[0], ei[1]] = bond_tokens(ei, n, b.bond_index, b.bond_type)
    mask = torch.triu(torch.rand(n, n, generator=g) < 0.5, 1)
    dense[mask | mask.T] = 5
    pos = b.pos.to(dtype) + 0.3 * torch.randn(n, 3, generator=g, dtype=dtype)
    t = torch.rand(n_mol, generator=g, dtype=dtype)[b.batch]
    return a, c, dense, pos, t, b.batch


@pytest.fixture(autouse=True)
def _seed_every_rng():
    """torch, numpy and ``random`` start every test from seed 0: a test that draws without its own generator
    sees the same numbers whichever tests ran before it (and in whatever order)."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}  # pytest's own bookkeeping


@pytest.fixture(autouse=True)
def _process_settings_are_left_as_found(request):
    """torch's thread count and default dtype, RDKit's log levels and os.environ are the same after a test as
    before it: a change is undone (the next test must not inherit it) and reported as a warning naming the test,
    because library code must not change them behind its caller's back (molgen.settings)."""
    before = (torch.get_num_threads(), torch.get_default_dtype(), rdkit_log_status(), _environ())
    yield
    after = (torch.get_num_threads(), torch.get_default_dtype(), rdkit_log_status(), _environ())
    if after == before:
        return
    changed = [name for name, b, a in zip(("torch threads", "torch default dtype", "RDKit logging", "os.environ"),
                                          before, after) if a != b]
    keys = sorted(k for k in set(before[3]) | set(after[3]) if before[3].get(k) != after[3].get(k))
    if keys:
        changed[-1] += f" ({', '.join(keys)})"
    torch.set_num_threads(before[0])
    torch.set_default_dtype(before[1])
    set_rdkit_log_status(before[2])
    for key in keys:
        if key in before[3]:
            os.environ[key] = before[3][key]
        else:
            os.environ.pop(key, None)
    warnings.warn(f"{request.node.nodeid} left process-wide settings changed: {'; '.join(changed)} (restored)",
                  RuntimeWarning, stacklevel=1)


_KILL_SWITCH = '''\
"""`molgen` command line whose {target} SIGKILLs its process group right after call number {after} returns."""
import importlib
import os
import signal
import sys

module_name, _, attribute = {target!r}.partition(":")
owner_name, _, name = attribute.rpartition(".")
owner = importlib.import_module(module_name)
for part in filter(None, owner_name.split(".")):
    owner = getattr(owner, part)
original = getattr(owner, name)
calls = 0


def patched(*args, **kwargs):
    global calls
    result = original(*args, **kwargs)
    if os.environ.get("LOCAL_RANK", "0") == "0" and {contains!r} in " ".join(map(str, args)):
        calls += 1
        if calls == {after}:  # every process of the run dies at once, as on a lost node
            group = os.getpgid(0)
            if str(group) == os.environ.get("MOLGEN_TEST_PARENT_PGID"):
                os.kill(os.getpid(), signal.SIGKILL)  # never the test session's own group
            os.killpg(group, signal.SIGKILL)
    return result


setattr(owner, name, patched)
from molgen.cli import main  # noqa: E402

sys.exit(main())
'''


def killed_after(tmp_path, target: str, after: int, contains: str = "") -> list[str]:
    """Command prefix (instead of ``python -m molgen.cli``) of a molgen run that is SIGKILLed, with its whole
    process group, right after the ``after``-th call of ``target`` (``"module:Class.method"``) whose arguments
    mention ``contains`` has returned (counted in rank 0 only).

    Kill-and-resume tests use it so that the kill lands at a known point of the run whatever the machine's speed
    (polling for a file and killing "soon after" raced the run). Start the command with
    ``start_new_session=True`` and ``env=killed_after_env()``."""
    script = tmp_path / f"kill_after_{after}_{target.rsplit('.', 1)[-1]}.py"
    script.write_text(_KILL_SWITCH.format(target=target, after=int(after), contains=contains))
    return [sys.executable, str(script)]


def killed_after_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "MOLGEN_TEST_PARENT_PGID": str(os.getpgid(0)), **extra}
