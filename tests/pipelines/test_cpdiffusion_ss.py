"""A tiny end-to-end CPDiffusion-SS run through molgen.cli.main, then molgen.load + sample on real templates,
a single-element template, and bad templates through the CLI (one-line errors)."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

import molgen
from molgen.cli import main

DATA = Path(__file__).parents[1] / "data" / "cpdiffusion_ss"
TINY = ["pipeline=cpdiffusion_ss", "data.max_chains=16", "model.epochs.mlm=1", "model.epochs.autoencoder=1",
        "model.epochs.diffusion=1", "model.oracle.epochs=1", "model.diffusion_steps=20", "model.lm_dim=32",
        "model.latent_dim=32", "model.dec_dim=32", "model.egnn_hidden=32", "model.crop=64", "sample.n=3",
        "sample.templates=2", "sample.fast_sampler_templates=1", "sample.fast_steps=5", "validate.max_pairs=10"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cpd")
    return root, TINY + [f"out={root / 'runs'}"]


def test_end_to_end_cli(tiny_run, capsys):
    root, args = tiny_run
    assert main(["run", *args]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("report: ")
    run = Path(lines[-1].split("report: ")[1]).parent
    report = (run / "report.md").read_text()
    assert "Oracle: **in-project" in report and "Paper, Table I" in report and "template   " in report
    fastas = sorted((run / "sample" / "designs" / "cpdiffusion_ss").glob("*.fasta"))
    assert len(fastas) == 2 and fastas[0].read_text().count(">") == 3
    rows = list(csv.DictReader(open(run / "validate" / "metrics.csv")))
    methods = {r["method"] for r in rows}
    assert {"cpdiffusion_ss", "vanilla_decoder", "ss_composition", "native", "cpdiffusion_ss_ddim5"} <= methods
    assert all(0 <= float(r["ss_identity"]) <= 100 for r in rows)
    split = (run / "featurize" / "split.tsv").read_text()
    assert "\ttest\t" in split and "\ttrain\t" in split
    # the same command again reuses every stage
    assert main(["run", *args]) == 0
    assert capsys.readouterr().out.count("reusing") == 4


def test_load_and_sample_templates(tiny_run, tmp_path):
    root, args = tiny_run
    ckpt = _finished_run(args) / "train" / "cpdiffusion_ss.ckpt"   # whichever test ran the tiny run first
    designer = molgen.load(ckpt)
    recs = designer.sample(template=DATA / "1r7aA02.pdb", n=4, seed=1)
    assert len(recs) == 4 and all(len(r.seq) >= 1 for r in recs)
    a = recs[0].annotations
    from molgen.data.proteins import element_string, ss8_to_ss3

    lines = (DATA / "1r7aA02.dssp").read_text().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("  #  RESIDUE"))
    reference = "".join(l[16] if l[16] != " " else "-" for l in lines[start + 1:] if l[13] != "!")
    assert a["ss_plan"] == element_string(ss8_to_ss3(reference))   # the plan is the reference DSSP's
    assert a["template"] == "1r7aA02"
    assert set(a["predicted_ss3"]) <= set("HEC") and len(a["predicted_ss3"]) == len(recs[0].seq)
    assert 0 <= a["ss_identity"] <= 100
    again = designer.sample(template=DATA / "1r7aA02.pdb", n=4, seed=1)
    assert [str(r.seq) for r in again] == [str(r.seq) for r in recs]
    fast = designer.sample(template=DATA / "1r7aA02.pdb", n=2, sampler="ddim", steps=5)
    assert len(fast) == 2
    # a single-element template (a short coil fragment): documented handling = designs for a one-node graph
    lines = [l for l in (DATA / "1r7aA02.pdb").open() if l.startswith("ATOM") and 86 <= int(l[22:26]) <= 89]
    single = tmp_path / "single.pdb"
    single.write_text("".join(lines) + "END\n")
    recs = designer.sample(template=single, n=2)
    assert recs[0].annotations["ss_plan"] == "C" and len(recs) == 2


def test_bad_templates_through_cli(tiny_run, tmp_path, capsys):
    root, args = tiny_run
    ckpt = _finished_run(args) / "train" / "cpdiffusion_ss.ckpt"   # whichever test ran the tiny run first
    capsys.readouterr()
    no_ca = tmp_path / "no_ca.pdb"
    no_ca.write_text("".join(l for l in (DATA / "1r7aA02.pdb").open() if l[12:16].strip() != "CA"))
    empty = tmp_path / "empty.pdb"
    empty.write_text("")
    ca_only = tmp_path / "ca_only.pdb"
    ca_only.write_text("".join(l for l in (DATA / "1r7aA02.pdb").open()
                               if not l.startswith("ATOM") or l[12:16].strip() == "CA"))
    cases = [(no_ca, [], "no amino-acid residue with a C-alpha"), (empty, [], "empty file"),
             (ca_only, [], "no residue has a complete N/CA/C/O backbone"),
             (DATA / "1r7aA02.pdb", ["chain=Z"], "no chain 'Z' (chains: A)")]
    for bad, extra, msg in cases:
        code = main(["run", *args, "stage=sample", f"template={bad}", *extra, f"ckpt={ckpt}", f"run=bad_{bad.stem}"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and msg in err[0], (bad, err)
    # the chain given on the command line is the one designed for; FASTA out
    code = main(["run", *args, "stage=sample", f"template={DATA / '1r7aA02.pdb'}", "chain=A", f"ckpt={ckpt}",
                 "run=chain_a", "sample.methods=[ss_composition]", "sample.n=3", "sample.fast_sampler_templates=0"])
    assert code == 0
    fasta = next((root / "runs" / "chain_a" / "sample" / "designs" / "ss_composition").glob("*.fasta")).read_text()
    assert fasta.count(">") == 3


def test_shipped_checkpoint_loads_by_name_and_designs():
    import torch

    shipped = Path(molgen.__file__).parent / "checkpoints" / "cpdiffusion_ss-cath.ckpt"
    if not shipped.exists():
        pytest.skip("no shipped cpdiffusion_ss-cath checkpoint in this checkout")
    assert shipped.stat().st_size <= 20e6
    torch.load(shipped, map_location="cpu", weights_only=True)   # plain content only
    designer = molgen.load("cpdiffusion_ss-cath")
    recs = designer.sample(template=DATA / "1g5aA03.pdb", n=2, sampler="ddim", steps=10, seed=0)
    assert len(recs) == 2 and recs[0].annotations["oracle"].startswith("in-project")
    assert designer.info["metrics"]["oracle_q3_test"] > 0.5


def test_designs_fit_their_template_by_construction():
    """The shipped (plan-aligned) designer: templates of different lengths, every design exactly the template's
    length, element by element; a length range without 1 is refused; the SS-composition baseline takes the
    template's length."""
    from molgen.data.proteins import load_template

    if "cpdiffusion_ss-cath" not in molgen.list_checkpoints():
        pytest.skip("no shipped cpdiffusion_ss-cath checkpoint in this checkout")
    designer = molgen.load("cpdiffusion_ss-cath")
    lengths = {}
    for pdb in sorted(DATA.glob("*.pdb"))[:3]:
        L = len(load_template(pdb))
        for method in ("cpdiffusion_ss", "vanilla_decoder"):
            recs = designer.sample(template=pdb, n=3, method=method, sampler="ddim", steps=5, seed=0,
                                   temperature=1.5)
            assert [len(r.seq) for r in recs] == [L] * 3, (pdb.stem, method)
        lengths[pdb.stem] = L
        comp = designer.sample(template=pdb, n=2, method="ss_composition", seed=0)
        assert all(len(r.seq) == L for r in comp)
    assert len(set(lengths.values())) == len(lengths) > 1     # really different templates
    first = sorted(DATA.glob("*.pdb"))[0]
    with pytest.raises(molgen.errors.DataError, match="length_range"):
        designer.sample(template=first, n=1, length_range=(1.2, 0.8))
    with pytest.raises(molgen.errors.DataError, match="plan_decoder"):
        designer.sample(template=first, n=1, length_range=(1.5, 1.6))


def test_free_length_decoder_keeps_designs_in_the_length_range(tmp_path):
    """model.plan_decoder=false (the paper's decoder): the length range bounds the designs (default 0.8-1.2 x the
    template, or another range on request)."""
    from molgen.data.proteins import load_template

    args = [a for a in TINY if not a.startswith("sample.")] + [
        "stage=train", "model.plan_decoder=false", "model.residue_encoder=lm", f"out={tmp_path}", "run=free"]
    assert main(["run", *args]) == 0
    designer = molgen.load(tmp_path / "free" / "train" / "cpdiffusion_ss.ckpt")
    assert not designer.model.decoder.plan
    for pdb in sorted(DATA.glob("*.pdb"))[:2]:
        L = len(load_template(pdb))
        recs = designer.sample(template=pdb, n=3, sampler="ddim", steps=5, seed=0, temperature=1.5)
        assert all(0.8 * L <= len(r.seq) <= 1.2 * L for r in recs), (pdb.stem, L, [len(r.seq) for r in recs])
        wider = designer.sample(template=pdb, n=2, sampler="ddim", steps=5, seed=0, length_range=(1.5, 1.6))
        assert all(1.5 * L <= len(r.seq) <= 1.6 * L for r in wider)


def _finished_run(args) -> Path:
    """The tiny run's folder (runs it when an earlier test has not; otherwise every stage is reused)."""
    assert main(["run", *args]) == 0
    return Path(args[-1].split("=", 1)[1]) / "cpdiffusion_ss-cath_subset"


def test_esmfold_oracle_refused_without_weights(tiny_run, tmp_path, monkeypatch, capsys):
    root, args = tiny_run
    run = _finished_run(args)
    before = (run / "validate" / "report.md").read_text()
    capsys.readouterr()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch hub: ESMFold's weights are absent
    assert main(["run", *args, "stage=validate", "validate.oracle=esmfold"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: validate.oracle=esmfold: ESMFold is not available")
    assert "esmfold_3B_v1.pt" in err[0] and str(tmp_path / "torch" / "hub" / "checkpoints") in err[0]
    assert not (tmp_path / "torch" / "hub" / "checkpoints").exists()   # nothing downloaded
    kept = [d for d in run.iterdir() if d.name.startswith("validate")]
    assert any((d / "report.md").exists() and (d / "report.md").read_text() == before for d in kept)
    assert main(["run", *args, "stage=validate", "validate.oracle=alphafold"]) == 2
    assert "validate.oracle=alphafold: unknown oracle" in capsys.readouterr().err


def test_missing_esmfold_is_reported_before_any_stage_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    out = tmp_path / "fresh"
    assert main(["run", *TINY, f"out={out}", "validate.oracle=esmfold"]) == 2
    assert "ESMFold is not available" in capsys.readouterr().err
    assert not any(out.rglob("featurize")) and not any(out.rglob("train"))   # no training before the refusal


def test_structures_oracle_on_real_structures(tiny_run, tmp_path, capsys):
    """The structure route of the evaluation (the one ESMFold feeds), with real CATH structures standing in for
    folded designs: every CPDiffusion-SS design gets 1r7aA02 (TM diversity 1, SS = its reference DSSP), the
    DDIM designs 1g5aA03, the vanilla decoder's designs alternate 1r7aA02 / 1c0pA01 (unrelated folds: lower TM
    diversity)."""
    import json
    import shutil

    root, args = tiny_run
    run = _finished_run(args)
    rows = [json.loads(l) for l in open(run / "sample" / "samples.jsonl")]
    folder = tmp_path / "folded"
    for r in rows:
        pick = "1r7aA02" if r["method"] != "vanilla_decoder" or int(r["id"].rsplit("_", 1)[1]) % 2 == 0 else "1c0pA01"
        pick = "1g5aA03" if r["method"] == "cpdiffusion_ss_ddim5" else pick
        target = folder / r["method"] / r["template"] / f"{r['id']}.pdb"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(DATA / f"{pick}.pdb", target)
    missing = tmp_path / "partial"
    shutil.copytree(folder, missing)
    next(missing.rglob("*.pdb")).unlink()
    capsys.readouterr()
    assert main(["run", *args, "stage=validate", "validate.oracle=structures", f"validate.structures_dir={missing}"]) == 2
    assert "no structure for 1 of" in capsys.readouterr().err
    assert main(["run", *args, "stage=validate", "validate.oracle=structures", f"validate.structures_dir={folder}"]) == 0
    report = (run / "validate" / "report.md").read_text()
    assert f"Oracle: **structures from {folder}" in report and "TM div" in report
    assert f"({len(rows)} of {len(rows)} structures do not carry their design's sequence)" in report  # stand-ins
    table = {r["method"]: r for r in csv.DictReader(open(run / "validate" / "table.csv"))}
    assert table["cpdiffusion_ss"]["tm_diversity"].startswith("1.00")
    assert float(table["vanilla_decoder"]["tm_diversity"].split()[0]) < 0.9
    from molgen.data.proteins import element_string, ss8_to_ss3

    def reference(domain):
        lines = (DATA / f"{domain}.dssp").read_text().splitlines()
        start = next(i for i, l in enumerate(lines) if l.startswith("  #  RESIDUE"))
        return element_string(ss8_to_ss3("".join(l[16] if l[16] != " " else "-" for l in lines[start + 1:] if l[13] != "!")))

    all_rows = list(csv.DictReader(open(run / "validate" / "metrics.csv")))
    for method, domain in (("cpdiffusion_ss", "1r7aA02"), ("cpdiffusion_ss_ddim5", "1g5aA03")):
        per_seq = [r for r in all_rows if r["method"] == method]
        assert per_seq and all(r["predicted_elements"] == reference(domain) for r in per_seq)   # SS from the structure
        assert all(0 <= float(r["tm_to_template"]) <= 1 for r in per_seq)
    assert len({r["id"] for r in rows}) == len(rows)   # design ids are unique across methods
    assert "native" not in table   # no structure for the native sequences: left out, not scored from the plan
