"""Write data/validation/handmade.sdf, data/validation/corrupted.sdf and data/validation/ions.sdf: small
hand-made test molecules.

Each molecule is embedded with RDKit ETKDG (seed 0) and relaxed with MMFF94 where MMFF has parameters; the
"hypervalent" record is methylammonium with its formal charge removed (a neutral N with four bonds, which
RDKit cannot parse from SMILES). corrupted.sdf = handmade.sdf with record 2 broken (garbage counts line) and
record 4 given a NaN coordinate. ions.sdf: ions, zwitterions, a salt, hypervalent S/P and radicals, whose
stability verdicts do not depend on QM9's net-charge convention; the pentavalent carbon (CH5, trigonal
bipyramid, 1.10 A) is written by hand since RDKit cannot embed it. Run: python scripts/make_validation_testset.py
"""
from pathlib import Path

from rdkit import Chem
from rdkit.Chem import AllChem

OUT = Path(__file__).resolve().parents[1] / "data" / "validation"
RECORDS = [  # (name, SMILES, zero the formal charges afterwards)
    ("ethanol", "CCO", False),
    ("glycine_zwitterion", "[NH3+]CC(=O)[O-]", False),
    ("acetate", "CC(=O)[O-]", False),
    ("ammonium", "[NH4+]", False),
    ("methyl_radical", "[CH3]", False),
    ("hypervalent_neutral_N", "C[NH3+]", True),
    ("ethanol_water", "CCO.O", False),
    ("acetonitrile", "CC#N", False),
]

ION_RECORDS = [  # (name, SMILES): stability verdicts in tests/validation/test_structure.py
    ("methylammonium", "C[NH3+]"),
    ("ammonium_acetate_salt", "[NH4+].CC(=O)[O-]"),
    ("lysine_cation", "[NH3+]CCCCC([NH3+])C(=O)[O-]"),
    ("nitromethane", "C[N+](=O)[O-]"),
    ("methanesulfonamide", "CS(N)(=O)=O"),
    ("dimethyl_sulfoxide", "CS(C)=O"),
    ("phosphoric_acid", "OP(=O)(O)O"),
    ("aminyl_radical", "[NH2]"),
]


def pentavalent_carbon() -> Chem.Mol:
    """CH5 as a trigonal bipyramid (C-H 1.10 A), sanitization off: a carbon with five bonds."""
    import math

    rw = Chem.RWMol()
    c = rw.AddAtom(Chem.Atom(6))
    dirs = [(0, 0, 1), (0, 0, -1)] + [(math.cos(a), math.sin(a), 0) for a in (0, 2 * math.pi / 3, 4 * math.pi / 3)]
    conf = Chem.Conformer(6)
    for k, d in enumerate(dirs, start=1):
        h = Chem.Atom(1)
        h.SetNoImplicit(True)
        rw.AddAtom(h)
        rw.AddBond(c, k, Chem.BondType.SINGLE)
        conf.SetAtomPosition(k, [1.10 * x for x in d])
    rw.GetAtomWithIdx(c).SetNoImplicit(True)
    mol = rw.GetMol()
    mol.UpdatePropertyCache(strict=False)
    mol.AddConformer(conf, assignId=True)
    return mol


def build(smiles: str, zero_charges: bool) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=0)
    if AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol)
    if zero_charges:
        for a in mol.GetAtoms():
            a.SetFormalCharge(0)
            a.SetNoImplicit(True)
    return mol


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "handmade.sdf"
    with Chem.SDWriter(str(path)) as w:
        for name, smi, zero in RECORDS:
            mol = build(smi, zero)
            mol.SetProp("_Name", name)
            mol.SetProp("source_smiles", smi)
            w.write(mol)
    blocks = path.read_text().split("$$$$\n")
    lines = blocks[1].split("\n")
    lines[3] = "garbage counts line"
    blocks[1] = "\n".join(lines)
    lines = blocks[3].split("\n")
    lines[4] = "       nan    0.0000    0.0000 N   0  0  0  0  0  0  0  0  0  0  0  0"
    blocks[3] = "\n".join(lines)
    (OUT / "corrupted.sdf").write_text("$$$$\n".join(blocks))
    ions = OUT / "ions.sdf"
    with Chem.SDWriter(str(ions)) as w:
        w.SetKekulize(False)
        for name, smi in ION_RECORDS:
            mol = build(smi, False)
            mol.SetProp("_Name", name)
            mol.SetProp("source_smiles", smi)
            w.write(mol)
        mol = pentavalent_carbon()
        mol.SetProp("_Name", "pentavalent_carbon")
        mol.SetProp("source_smiles", "none (C with five H, written by hand)")
        w.write(mol)
    print(f"wrote {path}, {OUT / 'corrupted.sdf'} and {ions}")


if __name__ == "__main__":
    main()
