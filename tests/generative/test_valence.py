"""Valence-constrained decoding: the most probable token assignment under the revised valence rule, on real
molecules (ETKDG conformers of QM9-like SMILES) and on PropMolFlow's sampler."""
import numpy as np
import pytest
import torch

from molgen.data.graph import MoleculeVocab
from molgen.data.molecule import ELEMENTS, NEUTRAL_VALENCES, BondOrder, Molecule
from molgen.generative.valence import decision_scores, valence_decode
from molgen.validation.structure import revised_atom_stable

VOCAB = MoleculeVocab()
VALENCES = [NEUTRAL_VALENCES[ELEMENTS[z]] for z in VOCAB.elements]
ORDERS = [0.0] + [BondOrder(k).valence for k in range(1, VOCAB.n_bond_types)]


def tokens(mol: Molecule):
    """(atom classes, charge classes, pairs i < j, bond class of each pair) of a molecule."""
    a = np.array([VOCAB.elements.index(int(z)) for z in mol.atomic_numbers])
    c = np.array([VOCAB.charges.index(int(q)) for q in mol.formal_charges])
    iu, ju = np.triu_indices(mol.num_atoms, 1)
    dense = np.zeros((mol.num_atoms, mol.num_atoms), dtype=np.int64)
    for (i, j), o in zip(mol.bonds, mol.bond_orders):
        dense[min(i, j), max(i, j)] = int(o)
    return a, c, np.stack([iu, ju], 1), dense[iu, ju]


def confident(labels: np.ndarray, n_classes: int, p: float = 0.9) -> np.ndarray:
    """Log-scores that put probability ``p`` on each label and spread the rest."""
    s = np.full((labels.shape[0], n_classes), np.log((1 - p) / (n_classes - 1)))
    s[np.arange(labels.shape[0]), labels] = np.log(p)
    return s


def decode(a, c, pairs, e, net_charge=0, **scores):
    sa = scores.get("sa", confident(a, VOCAB.n_atom_types))
    sc = scores.get("sc", confident(c, VOCAB.n_charges))
    se = scores.get("se", confident(e, VOCAB.n_bond_types))
    return valence_decode(sa, sc, se, pairs, VALENCES, list(VOCAB.charges), ORDERS, net_charge=net_charge)


def as_molecule(mol, a, c, pairs, e) -> Molecule:
    keep = e > 0
    return Molecule(mol.positions, np.array([VOCAB.elements[k] for k in a]), np.array([VOCAB.charges[k] for k in c]),
                    pairs[keep], e[keep])


def test_scores_that_already_satisfy_the_rule_decode_to_their_argmax(real_molecules):
    for mol in real_molecules:
        a, c, pairs, e = tokens(mol)
        out = decode(a, c, pairs, e)
        assert out is not None
        np.testing.assert_array_equal(out[0], a)
        np.testing.assert_array_equal(out[1], c)
        np.testing.assert_array_equal(out[2], e)


def test_a_double_bond_the_scores_narrowly_miss_is_restored(real_molecules):
    """Argmax reads C=O as single (two open shells); the cheapest assignment that satisfies every atom is the
    molecule itself, not a charged or re-wired one."""
    restored = 0
    for mol in real_molecules:
        a, c, pairs, e = tokens(mol)
        double = np.nonzero(e == 2)[0]
        if not len(double):
            continue
        se = confident(e, VOCAB.n_bond_types)
        k = double[0]
        se[k, 1], se[k, 2] = np.log(0.55), np.log(0.40)          # argmax: single
        sa, sc = confident(a, VOCAB.n_atom_types), confident(c, VOCAB.n_charges)
        argmax = as_molecule(mol, a, c, pairs, se.argmax(1))
        assert not revised_atom_stable(argmax).all()
        out = decode(a, c, pairs, e, sa=sa, sc=sc, se=se)
        assert out is not None
        np.testing.assert_array_equal(out[2], e)
        fixed = as_molecule(mol, *out[:2], pairs, out[2])
        assert revised_atom_stable(fixed).all()
        restored += 1
    assert restored >= 3        # CC(=O)O, CN=CO, NC(=O)CF (phenol kekulized too)


def test_the_net_charge_constraint_and_infeasibility():
    """A lone hydrogen can only reach valence 1 as H- (v - q = 0 + 1): allowed without a net-charge constraint,
    impossible at net charge 0 (None: the caller keeps its sampled tokens)."""
    a, c = np.array([0]), np.array([VOCAB.charges.index(0)])
    pairs, e = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.int64)
    assert decode(a, c, pairs, e, net_charge=0) is None
    out = decode(a, c, pairs, e, net_charge=None)
    assert out is not None and VOCAB.charges[int(out[1][0])] == -1


def test_decision_scores_keep_decided_tokens_and_price_changes_by_the_prediction():
    mask = 5
    x_t = torch.tensor([mask, 2, 2])
    logits = torch.tensor([[0.0, 3.0, 0.0, 0.0, 0.0],       # masked: the prediction alone
                           [0.0, 3.0, 0.0, 0.0, 0.0],       # decided as 2, mildly contradicted
                           [0.0, 30.0, 0.0, 0.0, 0.0]])     # decided as 2, contradicted with near certainty
    s = decision_scores(x_t, logits, mask)
    np.testing.assert_allclose(s[0], torch.log_softmax(logits[0].double(), -1).numpy())
    assert s[1].argmax() == 2 and s[2].argmax() == 2                 # a decision stands on its own ...
    assert s[2, 1] > s[1, 1] > s[1, 3] and s[2, 1] == pytest.approx(np.log(0.01), abs=1e-6)   # ... changes cost less
    # where the prediction agrees: about log(1 / 0.01) = 4.6 nats for the surest one
    fixed = decision_scores(x_t, logits, mask, change=0.0)
    assert fixed[2].argmax() == 2 and (fixed[2][[0, 1, 3, 4]] < -600).all()      # out of any candidate window


def test_propmolflow_decoding_changes_only_the_tokens():
    """Same seed: the decoded run has the plain run's geometry, every molecule the decoder solved satisfies the
    revised valence rule (aromatic bonds counting 1.5: an untrained network proposes them; whether RDKit can
    kekulize such an assignment is not part of the rule) and has the net charge asked for: 0 by default, the
    sampled one with ``net_charge=None``."""
    from molgen.models.propmolflow.model import PropMolFlow
    from tests.models.propmolflow.test_model import TINY

    torch.manual_seed(0)
    model = PropMolFlow(**TINY)
    sizes, kw = [4, 7, 9, 6], dict(steps=4, seed=5, progress=False)
    plain = model.sample_molecules(sizes, **kw)
    assert model.last_decode is None
    for net_charge in (None, 0):
        decoded = model.sample_molecules(sizes, valence_decode=True, net_charge=net_charge, **kw)
        counts = model.last_decode
        assert counts["molecules"] == len(sizes) and counts["kept"] < len(sizes)
        solved = 0
        assert counts["fragmented"] <= counts["molecules"] - counts["kept"]
        for p, d in zip(plain, decoded):
            np.testing.assert_array_equal(p.positions, d.positions)
            allowed = [NEUTRAL_VALENCES[s] for s in d.symbols]
            if all(v - q in ok for v, q, ok in zip(d.valences(), d.formal_charges, allowed)):
                solved += 1
                want = p.formal_charges.sum() if net_charge is None else net_charge
                assert d.formal_charges.sum() == want
        assert solved == counts["molecules"] - counts["kept"]
        assert counts["changed"] >= 1          # an untrained network's tokens are rarely valence-correct


@pytest.mark.parametrize("window", [5.0, 20.0])
def test_the_candidate_window_only_drops_classes_far_below_the_best(real_molecules, window):
    mol = real_molecules[1]                                      # CC(=O)O
    a, c, pairs, e = tokens(mol)
    se = confident(e, VOCAB.n_bond_types)
    k = np.nonzero(e == 2)[0][0]
    se[k, 1], se[k, 2] = np.log(0.55), np.log(0.40)
    out = valence_decode(confident(a, VOCAB.n_atom_types), confident(c, VOCAB.n_charges), se, pairs, VALENCES,
                         list(VOCAB.charges), ORDERS, net_charge=0, window=window)
    np.testing.assert_array_equal(out[2], e)


def test_connectivity_joins_fragments_only_through_bonds_the_scores_allow():
    """Argmax reads methanol as formaldehyde + H2 (valence-valid, two fragments). With ``connected=True`` the
    decoder returns methanol, whose tokens the scores rank second; without it the argmax stands. Two H2 molecules
    cannot be one molecule under the valence rule: None, so the caller can fall back to fragments."""
    from tests.conftest import embed_molecules

    mol = embed_molecules(("CO",))[0]
    a, c, pairs, e = tokens(mol)
    sym = list(mol.symbols)
    c_i, o_i = sym.index("C"), sym.index("O")
    both_ways = mol.bonds.tolist() + [[j, i] for i, j in mol.bonds.tolist()]
    h_c = [j for i, j in both_ways if i == c_i and sym[j] == "H"]
    h_o = [j for i, j in both_ways if i == o_i and sym[j] == "H"]
    fragmented = e.copy()
    index = {(int(i), int(j)): k for k, (i, j) in enumerate(pairs)}
    pk = lambda i, j: index[(min(i, j), max(i, j))]                                    # noqa: E731
    fragmented[pk(c_i, o_i)] = 2                                   # C=O
    fragmented[pk(c_i, h_c[0])] = 0                                # one C-H and the O-H leave ...
    fragmented[pk(o_i, h_o[0])] = 0
    fragmented[pk(h_c[0], h_o[0])] = 1                             # ... as H2
    se = confident(fragmented, VOCAB.n_bond_types, p=0.6)
    for k in np.nonzero(fragmented != e)[0]:
        se[k, e[k]] = np.log(0.3)
    args = (confident(a, VOCAB.n_atom_types), confident(c, VOCAB.n_charges), se, pairs, VALENCES,
            list(VOCAB.charges), ORDERS, 0)
    plain = valence_decode(*args)
    np.testing.assert_array_equal(plain[2], fragmented)
    joined = valence_decode(*args, connected=True)
    np.testing.assert_array_equal(joined[2], e)
    # bonds may be introduced only where allowed (the sampler allows pairs close in the generated geometry)
    assert valence_decode(*args, connected=True, can_bond=np.zeros(len(pairs), dtype=bool)) is None
    np.testing.assert_array_equal(valence_decode(*args, connected=True, can_bond=e > 0)[2], e)
    # 4 atoms sure to be neutral H (other classes outside the window): a connected graph needs 3 bonds = 6 bond
    # ends, the rule allows 4
    h4 = np.zeros(4, dtype=np.int64)
    iu, ju = np.triu_indices(4, 1)
    pairs4 = np.stack([iu, ju], 1)
    e4 = np.array([1 if (i, j) in ((0, 1), (2, 3)) else 0 for i, j in pairs4])
    sure = 1 - 1e-12
    neutral = np.full(4, VOCAB.charges.index(0))
    args4 = (confident(h4, VOCAB.n_atom_types, sure), confident(neutral, VOCAB.n_charges, sure),
             confident(e4, VOCAB.n_bond_types), pairs4, VALENCES, list(VOCAB.charges), ORDERS, 0)
    assert valence_decode(*args4, connected=True) is None
    np.testing.assert_array_equal(valence_decode(*args4)[2], e4)
