"""The validation report: ``report.md`` (PNG files beside it) and a self-contained, offline ``report.html``
(plots embedded as base64 PNG, a grid of 2D depictions with verdicts, 3D views by the shipped 3Dmol.js;
no external resource, no network request)."""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from molgen.data.molecule import Molecule
from molgen.formatting import fmt, markdown_cells, markdown_table, pct

STABILITY_ROWS = [
    ("EDM (distance-inferred bonds, neutral valences)", "stability_edm_atom", "stability_edm_mol"),
    ("MiDi/FlowMol lenient (own bonds, charge-aware)", "stability_lenient_atom", "stability_lenient_mol"),
    ("PropMolFlow revised, as coded (no net-charge check)", "stability_revised_atom",
     "stability_revised_nocharge_mol"),
    ("PropMolFlow revised + closed shell (ions count)", "stability_revised_atom", "stability_revised_mol"),
    ("PropMolFlow revised + closed shell + net charge zero (QM9 convention)", "stability_revised_atom",
     "stability_revised_neutral_mol"),
    ("revised + closed shell + one fragment", "stability_revised_atom", "stable_single_fragment_ratio"),
]


def _num(v) -> str:
    """A metric in a table: 4 significant digits, small values in scientific notation, None as n/a."""
    return fmt(v, none="n/a", sci_below=1e-3)


def _plots(result, bonded: list[Molecule], ref_mols: list[Molecule] | None) -> dict[str, bytes]:
    """PNG bytes of the report's figures, by file name."""
    from matplotlib.figure import Figure  # not pyplot: the caller's matplotlib backend stays as it is

    m = result.metrics
    figs: dict[str, bytes] = {}

    def save(fig, name):
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
        figs[name] = buf.getvalue()

    fig = Figure(figsize=(7, 3))
    ax = fig.subplots()
    labels = ["EDM", "lenient", "revised\n(atoms)", "revised\n+closed", "revised\n+charge 0", "closed\nshell",
              "valid\n(whole)", "valid\n(largest)"]
    vals = [m.get("stability_edm_mol"), m.get("stability_lenient_mol"), m.get("stability_revised_nocharge_mol"),
            m.get("stability_revised_mol"), m.get("stability_revised_neutral_mol"), m.get("closed_shell_ratio"),
            m.get("validity"), m.get("validity_largest_fragment")]
    ax.bar(labels, [v or 0 for v in vals], color=["#888", "#8ab", "#7a7", "#2a6", "#196", "#b84", "#68c", "#46a"])
    for k, v in enumerate(vals):
        ax.text(k, (v or 0) + 0.01, pct(v), ha="center", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("fraction of molecules")
    ax.set_title("Molecule stability under three definitions, closed shells, validity")
    save(fig, "stability.png")

    fig = Figure(figsize=(9, 3))
    axes = fig.subplots(1, 2)
    at = m.get("atom_type_counts", {})
    axes[0].bar(list(at), list(at.values()), color="#468")
    axes[0].set_title("atom types")
    rs = m.get("ring_size_counts", {})
    axes[1].bar(list(rs), list(rs.values()), color="#864")
    if not rs:
        axes[1].text(0.5, 0.5, "no rings", ha="center", va="center", transform=axes[1].transAxes)
        axes[1].set_xticks([])
        axes[1].set_yticks([])
    axes[1].set_title("ring sizes")
    save(fig, "histograms.png")

    if ref_mols:
        from molgen.validation.geometry import pooled_values

        gen, ref = pooled_values(bonded), pooled_values(ref_mols)
        kinds = [("bond", "bond length (A)"), ("angle", "angle (deg)"), ("torsion", "|torsion| (deg)")]
        fig = Figure(figsize=(12, 3))
        axes = fig.subplots(1, 3)
        for ax, (kind, label) in zip(axes, kinds):
            common = [k for k in sorted(gen[kind], key=lambda k: -len(gen[kind][k])) if k in ref[kind]][:1]
            for key in common:
                ax.hist(ref[kind][key], bins=40, density=True, alpha=0.5, label=f"reference {key}")
                ax.hist(gen[kind][key], bins=40, density=True, alpha=0.5, label=f"generated {key}")
            ax.set_xlabel(label)
            ax.legend(fontsize=7)
        save(fig, "distributions.png")

    scatter = _property_scatter(bonded, result.table)
    if scatter is not None:
        save(scatter, "property.png")

    t = result.table
    dft_props = [(p, c) for p, c in (("gap", "dft_gap_ev"), ("homo", "dft_homo_ev"), ("lumo", "dft_lumo_ev"),
                                     ("mu", "dft_dipole_debye"), ("alpha", "dft_alpha_bohr3"),
                                     ("Cv", "dft_cv_cal_molK")) if f"{p}_target" in t.columns and c in t.columns]
    if dft_props:
        fig = Figure(figsize=(3.5 * len(dft_props), 3.2))
        axes = fig.subplots(1, len(dft_props), squeeze=False)
        for ax, (p, c) in zip(axes[0], dft_props):
            x, y = t[f"{p}_target"].astype(float), t[c].astype(float)
            ax.scatter(x, y, s=8)
            lo, hi = np.nanmin([x.min(), y.min()]), np.nanmax([x.max(), y.max()])
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
            ax.set_xlabel(f"target {p}")
            ax.set_ylabel(f"DFT {p}")
        save(fig, "dft_vs_target.png")
    return figs


def _property_scatter(mols: list[Molecule], table):
    """Target vs regressor prediction and vs GFN2-xTB (relaxed geometry when relaxed) for property-conditioned
    molecules (SD tag ``gap`` etc. and ``pred_gap``); None when no molecule carries a target."""
    from matplotlib.figure import Figure

    from molgen.validation.api import CONDITIONAL_PROPERTIES, PREDICTION_PREFIXES

    panels = []
    for prop in CONDITIONAL_PROPERTIES:
        target = np.array([m.properties.get(prop, np.nan) for m in mols], dtype=float)
        if not np.isfinite(target).any():
            continue
        for pre in PREDICTION_PREFIXES:
            pred = np.array([m.properties.get(f"{pre}{prop}", np.nan) for m in mols], dtype=float)
            if np.isfinite(pred).any():
                panels.append((prop, target, pred, f"regressor {prop}", True))
                break
        for col in (f"xtb_relaxed_{prop}_ev", f"xtb_{prop}_ev"):
            if col in table.columns:
                y = table[col].astype(float).to_numpy()
                if np.isfinite(y).any():
                    panels.append((prop, target, y, col.replace("_ev", " (eV)"), False))
                    break
    if not panels:
        return None
    fig = Figure(figsize=(3.6 * len(panels), 3.3))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (prop, x, y, label, identity) in zip(axes, panels):
        ok = np.isfinite(x) & np.isfinite(y)
        ax.scatter(x[ok], y[ok], s=7, alpha=0.6)
        if identity and ok.any():
            lo, hi = float(min(x[ok].min(), y[ok].min())), float(max(x[ok].max(), y[ok].max()))
            ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        r = np.corrcoef(x[ok], y[ok])[0, 1] if ok.sum() > 2 and np.std(x[ok]) > 0 and np.std(y[ok]) > 0 else None
        ax.set_title(f"n={int(ok.sum())}" + (f", Pearson r={r:.2f}" if r is not None else ""), fontsize=9)
        ax.set_xlabel(f"target {prop}")
        ax.set_ylabel(label)
    return fig


def _markdown(result, title: str, images: dict[str, str]) -> str:
    m = result.metrics
    L = [f"# {title}", "", f"{m.get('n_molecules', 0)} molecules read from {m.get('source')}"
         f"{'; ' + str(m['n_skipped_records']) + ' unreadable records skipped ' + str(m.get('skipped_reasons')) if m.get('n_skipped_records') else ''}."
         f" Reference: {m.get('reference') or 'none (no novelty, no distribution distances)'}."
         f" Time: {m.get('seconds')} s.", "", "## Headline figures", "",
         markdown_table(["figure", "value", "definition"],
                        [[k, pct(h["value"]), f"{h['definition']} (`{h['metric']}`)"]
                         for k, h in m.get("headline", {}).items()])]
    if m.get("require_neutral_reason"):
        L += ["", f"Net charge zero {'is' if m.get('require_neutral') else 'is not'} required for the headline "
              f"molecule stability: {m['require_neutral_reason']} (`validate.require_neutral=true|false` sets it)."]
    L += ["", "## Stability under several definitions", "",
          markdown_table(["definition", "atom stability", "molecule stability"],
                         [[name, pct(m.get(a)), pct(m.get(mol))] for name, a, mol in STABILITY_ROWS])]
    keys = ["closed_shell_ratio", "even_electron_ratio", "net_charge_zero_ratio", "validity",
            "validity_largest_fragment", "validity_edm", "connected_ratio", "fragments_mean", "uniqueness",
            "valid_x_unique", "novelty", "novelty_of_valid"]
    L += ["", "## Structure", "", markdown_table(["metric", "value"], [[k, _num(m.get(k))] for k in keys if k in m])]
    for name in ("stability.png", "histograms.png"):
        if name in images:
            L += ["", f"![{name}]({images[name]})"]
    if "property.png" in images:
        L += ["", "## Property: target vs regressor and vs xTB", "", f"![property]({images['property.png']})"]
    pb = {k: v for k, v in m.items() if k.startswith("posebusters_") and k != "posebusters_mode"}
    if pb:
        fast = m.get("posebusters_mode") == "fast"
        L += ["", "## Geometry: PoseBusters (\"mol\" configuration)", "",
              "Pass rates among molecules RDKit can sanitize (invalid molecules are not tested)."
              + (" **Fast mode: the internal-energy ratio test was not run** (`posebusters=fast`)." if fast else ""),
              "", markdown_table(["test", "pass rate"],
                                 [[k.removeprefix("posebusters_"), pct(v)] for k, v in pb.items()])]
    if m.get("w1_bond_length_A") is not None:
        L += ["", "## Geometry: distribution distances to the reference", "",
              markdown_table(["metric", "value"], [[k, _num(m.get(k))] for k in (
                  "w1_bond_length_A", "w1_bond_angle_deg", "w1_torsion_deg", "tv_atom_types", "tv_bond_types")])]
        per = m.get("distribution_per_type", {}).get("bond", {})
        if per:
            L += ["", markdown_table(
                ["bond type", "W1 (A)", "mean generated", "mean reference", "n generated"],
                [[key, f"{v['w1']:.4f}", f"{v['mean_gen']:.3f}", f"{v['mean_ref']:.3f}", v["n_gen"]]
                 for key, v in sorted(per.items(), key=lambda kv: -kv[1]["n_gen"])[:12]])]
        if "distributions.png" in images:
            L += ["", f"![distributions]({images['distributions.png']})"]
    L += ["", "## Distribution: FCD", ""]
    if m.get("fcd") is not None:
        L += [f"FCD = {m['fcd']:.3f} ({m.get('fcd_n_generated')} generated vs {m.get('fcd_n_reference')} "
              f"reference molecules)", ""]
    L += [m.get("fcd_note", "")]
    q = {k: v for k, v in m.items() if k.startswith(("xtb_", "dft_"))}
    if q:
        L += ["", "## Quantum chemistry (xTB GFN2 via tblite; DFT B3LYP/6-31G(2df,p) via PySCF)", "",
              markdown_table(["metric", "value"], [
                  [k, _num(v) if not isinstance(v, dict) else (", ".join(f"{a}: {b}" for a, b in v.items()) or "none")]
                  for k, v in q.items()])]
        if "dft_vs_target.png" in images:
            L += ["", f"![dft]({images['dft_vs_target.png']})"]
    stable_col = "mol_stable_neutral" if m.get("require_neutral") else "mol_stable"
    bad = result.table[~result.table[stable_col].astype(bool)] if stable_col in result.table else result.table[:0]
    if len(bad):
        L += ["", f"## Molecules failing the headline stability rule ({len(bad)}, first 20)", "",
              markdown_table(["index", "name", "formula", "net charge", "open shell", "unstable atoms"],
                             [[f"{r[c]}" for c in ("index", "name", "formula", "net_charge", "open_shell",
                                                   "unstable_atoms")] for _, r in bad.head(20).iterrows()])]
    L += ["", "Files: `metrics.json`, `molecules.csv` (one row per molecule), `molecules.sdf` (annotated).", ""]
    return "\n".join(L)


def _md_to_html(md: str, title: str) -> str:
    """A minimal Markdown-to-HTML rendering for what :func:`_markdown` writes (headings, tables, images,
    paragraphs). Hand-written to keep the report dependency-free and offline."""
    out, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = markdown_cells(line)
            if set("".join(cells)) <= set("-: "):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("# "):
            out.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            out.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            out.append(f'<img alt="{html.escape(alt)}" src="{src.rstrip(")")}">')
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    if in_table:
        out.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
             "font-size:13px}th{background:#eee}img{max-width:100%}h2{border-bottom:1px solid #ccc}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def _inline(text: str) -> str:
    parts = text.split("`")
    return "".join(f"<code>{html.escape(p)}</code>" if k % 2 else html.escape(p) for k, p in enumerate(parts))


def _viewer_picks(table, stable_col: str, k: int) -> list[int]:
    """Up to ``k`` molecules for 3D views: half of them from the failures (grid order), the rest the first
    molecules that pass, in file order."""
    from molgen.validation.depict import grid_order

    if k <= 0 or not len(table):
        return []
    ok = table[stable_col].astype(bool).to_numpy() & table["valid"].astype(bool).to_numpy()
    failures = [i for i in grid_order(table, stable_col) if not ok[i]][: k // 2]
    passing = [i for i in range(len(table)) if ok[i]][: k - len(failures)]
    return sorted(failures + passing)


def write_reports(result, bonded: list[Molecule], title: str, ref, depictions: int = 48,
                  viewer: int = 6) -> Path:
    """Write report.md (+ PNG files) and report.html (PNG embedded, depiction grid of up to ``depictions``
    molecules and 3D views of ``viewer`` molecules, all inline) into ``result.out``; return report.html."""
    from molgen.validation.depict import GRID_STYLE, molecule_grid_html, viewer_html

    out: Path = result.out
    figs = _plots(result, bonded, [m for m in (ref.molecules or [])] if ref is not None and ref.molecules else None)
    from molgen.files import write_atomic

    for name, data in figs.items():
        write_atomic(out / name, data)
    md = _markdown(result, title, {n: f"./{n}" for n in figs})
    write_atomic(out / "report.md", md)
    embedded = {n: "data:image/png;base64," + base64.b64encode(d).decode() for n, d in figs.items()}
    page = _md_to_html(_markdown(result, title, embedded), title)
    stable_col = "mol_stable_neutral" if result.metrics.get("require_neutral") else "mol_stable"
    table = result.table
    extra = molecule_grid_html(table, bonded, n_max=depictions, stable_col=stable_col)
    picks = _viewer_picks(table, stable_col, viewer)
    extra += viewer_html(bonded, picks, [f"#{i} {table.iloc[i].get('formula', '')}"
                                         f"{'' if table.iloc[i][stable_col] else ' (unstable)'}" for i in picks])
    page = page.replace("</style>", GRID_STYLE + "</style>", 1).replace("\n</body>", "\n" + extra + "\n</body>", 1)
    return write_atomic(out / "report.html", page)
