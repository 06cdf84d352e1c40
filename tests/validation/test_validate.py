"""molgen.validate and `molgen validate`: outputs, bad input, reference handling."""
import json
import re
import subprocess
import sys

import pandas as pd
import pytest

from molgen.cli import main
from molgen.validation import validate

from .conftest import DATA


def test_validate_writes_outputs(tmp_path, capsys):
    out = tmp_path / "val"
    rc = main(["validate", str(DATA / "corrupted.sdf"), f"out={out}", "distributions=false"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert rc == 0 and lines[-1] == f"report: {out / 'report.html'}"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_skipped_records"] == 2 and metrics["n_molecules"] == 6
    assert metrics["headline"]["molecule_stability"]["metric"] == "stability_revised_mol"
    table = pd.read_csv(out / "molecules.csv")
    for col in ("index", "smiles", "valid", "mol_stable", "atom_stable_fraction", "open_shell", "n_fragments",
                "posebusters_pass"):
        assert col in table.columns
    assert table["posebusters_pass"].isna().sum() == 1  # the hypervalent record cannot be sanitized: not tested
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html
    # scripts are inline (the shipped 3D viewer); outside them nothing refers to the network
    outside = re.sub(r"<script>.*?</script>", "", html, flags=re.S)
    assert "<script src" not in html and not re.search(r"""(src|href|url)\s*[=(]\s*["']?(https?:)?//""", outside)
    assert outside.count("class='cell'") == 6 and "3D views" in outside
    from rdkit import Chem

    sdf = [m for m in Chem.SDMolSupplier(str(out / "molecules.sdf"), sanitize=False, removeHs=False)]
    assert len(sdf) == 6 and sdf[0].HasProp("molgen_validation_mol_stable")


def test_validate_python_api_reference_set(handmade):
    res = validate([handmade["ethanol"], handmade["acetonitrile"]], reference={"CC#N"}, posebusters=False,
                   progress=False)
    assert res.metrics["novelty"] == pytest.approx(0.5)
    assert list(res.table["smiles"]) == ["CCO", "CC#N"]
    assert res.out is None and res.report is None


def test_headline_requires_net_charge_zero_only_for_a_neutral_reference(handmade):
    """Acetate and ammonium are stable ions; the headline adds QM9's net-charge convention only when the
    reference data set is neutral, or when asked."""
    mols = [handmade[n] for n in ("ethanol", "acetate", "ammonium", "methyl_radical")]

    def headline(**kw):
        res = validate(mols, posebusters=False, distributions=False, fcd=False, progress=False, **kw)
        h = res.metrics["headline"]["molecule_stability"]
        return h["metric"], h["value"], res.metrics["require_neutral"]

    assert headline(reference=None) == ("stability_revised_mol", pytest.approx(0.75), False)
    assert headline(reference={"CCO", "CC#N"}) == ("stability_revised_neutral_mol", pytest.approx(0.25), True)
    assert headline(reference={"CCO", "CC(=O)[O-]"})[2] is False       # a charged reference molecule
    assert headline(reference=None, require_neutral=True)[:2] == ("stability_revised_neutral_mol",
                                                                  pytest.approx(0.25))


def test_a_second_validate_into_a_busy_folder_is_refused(tmp_path, capsys):
    """While one process writes a validation folder (its lock held: here by a child process), a second
    `molgen validate` into it exits 2 with one line and writes nothing there; once free, it runs."""
    import time

    out = tmp_path / "val"
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys, time; from molgen.files import claim; "
                               f"lock = claim({str(out)!r}, 'validate', 'x'); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc = main(["validate", str(DATA / "handmade.sdf"), f"out={out}", "distributions=false", "posebusters=false"])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "being written by another molgen process" in err[0], err
        assert not (out / "report.html").exists() and not (out / "metrics.json").exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    assert main(["validate", str(DATA / "handmade.sdf"), f"out={out}", "distributions=false",
                 "posebusters=false"]) == 0
    assert (out / "report.html").exists() and not list(out.glob("*.tmp*"))


def test_report_survives_molecules_rdkit_cannot_write(handmade, tmp_path):
    """A generator can emit atoms RDKit refuses to write (an H with charge +3): such a molecule is drawn from
    its bonds or marked undrawable, gets no 3D view, and the report is written."""
    import numpy as np

    from molgen.data.molecule import Molecule

    odd = Molecule(np.array([[0.0, 0, 0], [0.74, 0, 0]]), [1, 1], formal_charges=[3, 0], bonds=np.array([[0, 1]]),
                   bond_orders=np.array([1]), name="H3+ H")
    res = validate([odd, handmade["ethanol"]], out=tmp_path, posebusters=False, distributions=False, fcd=False,
                   progress=False, viewer=2)
    html = (tmp_path / "report.html").read_text()
    assert res.report.exists() and "class='cell'" in html
    assert "3D views (1 molecules)" in html                            # ethanol only


def test_reference_molecules_give_distribution_distances(handmade):
    mols = [handmade["ethanol"]] * 3
    res = validate(mols, reference=mols, posebusters=False, progress=False)
    assert res.metrics["w1_bond_length_A"] == pytest.approx(0.0, abs=1e-9)
    assert res.metrics["tv_atom_types"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("args, message", [
    (["validate", "missing.sdf"], "file not found: missing.sdf"),
    (["validate", "x.sdf", "nosuchkey=1"], "invalid key"),
    (["validate"], None),
])
def test_cli_bad_input_one_line(tmp_path, capsys, args, message):
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    if message:
        assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


def test_empty_file(tmp_path, capsys):
    empty = tmp_path / "empty.sdf"
    empty.write_text("")
    assert main(["validate", str(empty)]) == 2
    assert "error: empty file" in capsys.readouterr().err


def test_help_from_installed_entry_point():
    r = subprocess.run([sys.executable, "-m", "molgen.cli", "validate", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "dft.max_molecules" in r.stdout


def test_conditional_metrics_dft_vs_target_and_prediction(handmade):
    from molgen.validation.api import conditional_metrics

    mols = [handmade["ethanol"], handmade["acetonitrile"], handmade["glycine_zwitterion"]]
    mols = [type(m)(m.positions, m.atomic_numbers, m.formal_charges, m.bonds, m.bond_orders,
                    {"gap": g, "pred_gap": p}, m.name) for m, g, p in zip(mols, (7.0, 8.0, 5.0), (7.5, 8.0, 4.0))]
    table = pd.DataFrame({"dft_gap_ev": [7.2, 7.6, float("nan")]})  # the third DFT job failed
    m = conditional_metrics(mols, table)
    assert m["dft_vs_target_gap_mae_meV"] == pytest.approx(300.0)  # (0.2 + 0.4) / 2 eV
    assert m["dft_vs_prediction_gap_mae_meV"] == pytest.approx(350.0)  # (0.3 + 0.4) / 2 eV
    assert m["dft_vs_target_gap_n"] == 2
    assert list(table["gap_target"]) == [7.0, 8.0, 5.0]


def test_folder_of_xyz_files_infers_bonds(tmp_path, handmade):
    from molgen.data.io import write_xyz

    folder = tmp_path / "xyz"
    folder.mkdir()
    write_xyz([handmade["ethanol"], handmade["acetonitrile"]], folder / "a.xyz")
    write_xyz([handmade["glycine_zwitterion"]], folder / "b.xyz")
    (folder / "c.xyz").write_text("2\nbroken\nC 0 0 0\nXx 1 0 0\n")  # unknown element: skipped and counted
    res = validate(folder, posebusters=False, distributions=False, progress=False)
    assert res.metrics["n_molecules"] == 3 and res.metrics["n_skipped_records"] == 1
    assert list(res.table["bonds_source"]) == ["rdkit"] * 3
    assert list(res.table["smiles"][:2]) == ["CCO", "CC#N"]
    # xyz2mol on a neutral zwitterion geometry gives neutral glycine-like bonding or charges; either way it
    # must be a closed-shell, sanitizable molecule
    assert bool(res.table["valid"][2]) and not bool(res.table["open_shell"][2])


def test_run_from_pipeline_config(tmp_path):
    """What a pipeline's validate stage does: the validate config group -> validate(), scalar metrics back."""
    from molgen.config import compose
    from molgen.validation.api import validate_from_config

    cfg = compose(["validate.posebusters=false", "validate.distributions=false"])
    metrics = validate_from_config(DATA / "handmade.sdf", cfg.validate, out=tmp_path, reference={"CCO"}).scalar_metrics()
    assert metrics["n_molecules"] == 8 and 0 < metrics["novelty"] < 1
    assert all(not isinstance(v, (dict, list)) for v in metrics.values())
    assert (tmp_path / "report.md").exists() and (tmp_path / "metrics.json").exists()


def test_posebusters_modes_keep_posebusters_verdicts(handmade, tmp_path, capsys):
    """molgen's "mol" config (duplicate energy module removed) gives PoseBusters' own table; fast mode drops only
    the internal-energy ratio; the CLI takes posebusters=fast and the report says the test was not run."""
    from rdkit import Chem

    from molgen.settings import quiet_rdkit
    from molgen.validation.geometry import posebusters_table

    from rdkit.Chem import AllChem

    mols = [Chem.AddHs(Chem.MolFromSmiles(s)) for s in ("CCO", "c1ccccc1O")]
    for m in mols:
        AllChem.EmbedMolecule(m, randomSeed=0)
        AllChem.MMFFOptimizeMolecule(m)
    mols[1].GetConformer().SetAtomPosition(0, mols[1].GetConformer().GetAtomPosition(1))   # two atoms on top
    ours = posebusters_table(mols)
    with quiet_rdkit():   # PoseBusters itself switches RDKit's log levels (on import and around its checks)
        from posebusters import PoseBusters

        theirs = PoseBusters(config="mol").bust(mol_pred=mols, full_report=False)
    tests = [c for c in ours.columns if c not in ("posebusters_pass", "posebusters_failed")]
    assert tests == list(theirs.columns)
    # internal_energy compares with an ETKDG ensemble PoseBusters draws afresh on every call: not compared
    same = [c for c in tests if c != "internal_energy"]
    pd.testing.assert_frame_equal(ours[same].astype(object), theirs[same].reset_index(drop=True).astype(object),
                                  check_dtype=False)
    assert list(ours["bond_lengths"]) == [True, False] and not ours["posebusters_pass"][1]
    fast = posebusters_table(mols, mode="fast")
    assert set(ours.columns) - set(fast.columns) == {"internal_energy"}
    assert list(fast["bond_lengths"]) == [True, False] and not fast["posebusters_pass"][1]
    out = tmp_path / "val"
    assert main(["validate", str(DATA / "corrupted.sdf"), f"out={out}", "posebusters=fast",
                 "distributions=false"]) == 0
    assert json.loads((out / "metrics.json").read_text())["posebusters_mode"] == "fast"
    assert "internal-energy ratio test was not run" in (out / "report.html").read_text()
    assert main(["validate", str(DATA / "corrupted.sdf"), f"out={out}", "posebusters=maybe"]) == 2
    assert "posebusters=maybe: choose true, fast or false" in capsys.readouterr().err
