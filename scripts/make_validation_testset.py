"""Write data/validation/handmade.sdf and data/validation/corrupted.sdf: small hand-made test molecules.

Each molecule is embedded with RDKit ETKDG (seed 0) and relaxed with MMFF94 where MMFF has parameters; the
"hypervalent" record is methylammonium with its formal charge removed (a neutral N with four bonds, which
RDKit cannot parse from SMILES). corrupted.sdf = handmade.sdf with record 2 broken (garbage counts line) and
record 4 given a NaN coordinate. Run: python scripts/make_validation_testset.py
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
    print(f"wrote {path} and {OUT / 'corrupted.sdf'}")


if __name__ == "__main__":
    main()
