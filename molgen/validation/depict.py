"""What a person looks at in a validation report: 2D depictions with verdicts, and offline 3D views.

* :func:`depiction_svg`: an RDKit 2D drawing (SVG) of one molecule, also of molecules RDKit cannot sanitize
  (drawn from their bonds as given, unstable atoms highlighted).
* :func:`molecule_grid_html`: a grid of depictions with each molecule's verdicts (valid, stable, fragments,
  PoseBusters failures, xTB/DFT values when computed, target and predicted property), failures first, capped at
  ``n_max`` molecules and paged (``<details>`` blocks, no script needed).
* :func:`viewer_html`: interactive 3D views of a few molecules with 3Dmol.js, whose minified script ships with
  molgen (``molgen/assets/3Dmol-min.js``, npm release 2.5.5, BSD-3-Clause) and is inlined in the page: the
  report makes no network request.
"""
from __future__ import annotations

import html
import json
from importlib import resources

import numpy as np
import pandas as pd

from molgen.data.molecule import Molecule
from molgen.settings import quiet_rdkit

VIEWER_VERSION = "2.5.5"


@quiet_rdkit()
def depiction_svg(mol: Molecule, size: tuple[int, int] = (220, 170), highlight: list[int] | None = None) -> str:
    """2D depiction of ``mol`` (SVG text). Hydrogens on carbon are hidden when RDKit can do so; molecules that do
    not sanitize are drawn from their bonds as given. ``highlight``: atom indices drawn in red."""
    from rdkit import Chem
    from rdkit.Chem import rdDepictor
    from rdkit.Chem.Draw import rdMolDraw2D

    rd = Chem.Mol(mol.to_rdkit())
    rd.UpdatePropertyCache(strict=False)
    keep = set(highlight or [])
    try:
        Chem.SanitizeMol(rd)
        # hide H on carbon; keep heteroatom H (they carry chemistry) and highlighted atoms
        drop = [a.GetIdx() for a in rd.GetAtoms() if a.GetAtomicNum() == 1 and a.GetIdx() not in keep
                and all(n.GetAtomicNum() == 6 for n in a.GetNeighbors()) and a.GetDegree() == 1]
        if drop:
            rw = Chem.RWMol(rd)
            for idx in sorted(drop, reverse=True):
                rw.RemoveAtom(idx)
            rd = rw.GetMol()
            rd.UpdatePropertyCache(strict=False)
            old = [i for i in range(mol.num_atoms) if i not in set(drop)]
            keep = {old.index(i) for i in keep if i in old}
    except Exception:  # noqa: BLE001 -- not sanitizable: draw as given
        Chem.GetSymmSSSR(rd)
    rd.RemoveAllConformers()
    rdDepictor.Compute2DCoords(rd)
    drawer = rdMolDraw2D.MolDraw2DSVG(*size)
    opts = drawer.drawOptions()
    opts.clearBackground = False
    opts.addStereoAnnotation = False
    atoms = sorted(keep)
    drawer.DrawMolecule(rd, highlightAtoms=atoms, highlightAtomColors={a: (1.0, 0.55, 0.55) for a in atoms},
                        highlightBonds=[])
    drawer.FinishDrawing()
    svg = drawer.GetDrawingText()
    return svg[svg.index("<svg"):] if "<svg" in svg else svg


def _unstable_atoms(row: pd.Series) -> list[int]:
    text = str(row.get("unstable_atoms") or "")
    out = []
    for token in text.split(","):
        digits = "".join(ch for ch in token if ch.isdigit())
        if digits:
            out.append(int(digits))
    return out


def _value(row: pd.Series, col: str):
    v = row.get(col)
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return v


def verdicts(row: pd.Series, stable_col: str = "mol_stable") -> list[tuple[str, str, bool | None]]:
    """(label, text, good?) for one row of the validation table: what the grid shows under a depiction."""
    out: list[tuple[str, str, bool | None]] = []
    out.append(("valid", "valid" if row.get("valid") else "invalid", bool(row.get("valid"))))
    stable = bool(row.get(stable_col))
    why = []
    if not stable:
        if row.get("unstable_atoms"):
            why.append(f"atoms {row['unstable_atoms']}")
        if row.get("open_shell"):
            why.append("open shell")
        if stable_col == "mol_stable_neutral" and row.get("net_charge"):
            why.append(f"net charge {int(row['net_charge']):+d}")
    out.append(("stable", "stable" if stable else "unstable" + (f" ({', '.join(why)})" if why else ""), stable))
    n_frag = _value(row, "n_fragments")
    if n_frag is not None:
        out.append(("fragments", f"{int(n_frag)} fragment{'s' if int(n_frag) != 1 else ''}", int(n_frag) == 1))
    pb = _value(row, "posebusters_pass")
    if pb is not None:
        failed = _value(row, "posebusters_failed")
        out.append(("posebusters", "PoseBusters pass" if pb else f"PoseBusters fails: {failed or '?'}", bool(pb)))
    for col, label, unit in (("xtb_strain_kcal", "xTB strain", "kcal/mol"), ("xtb_gap_ev", "xTB gap", "eV"),
                             ("dft_gap_ev", "DFT gap", "eV")):
        v = _value(row, col)
        if v is not None:
            out.append((label, f"{label} {float(v):.2f} {unit}", None))
    for col in row.index:
        if col.endswith("_target") or col.startswith("pred_"):
            v = _value(row, col)
            if v is not None:
                out.append((col, f"{col} {float(v):.3g}", None))
    return out


def grid_order(table: pd.DataFrame, stable_col: str = "mol_stable") -> list[int]:
    """Row positions with failures first: invalid, then unstable, then PoseBusters failures, then the rest; file
    order within each group."""
    def rank(row) -> int:
        if not row.get("valid"):
            return 0
        if not row.get(stable_col):
            return 1
        if _value(row, "posebusters_pass") is False or _value(row, "posebusters_pass") == 0:
            return 2
        return 3

    ranks = [rank(r) for _, r in table.iterrows()]
    return sorted(range(len(table)), key=lambda k: (ranks[k], k))


def molecule_grid_html(table: pd.DataFrame, mols: list[Molecule], n_max: int = 48, page_size: int = 24,
                       stable_col: str = "mol_stable") -> str:
    """The depiction grid as an HTML fragment (inline SVG; no script). At most ``n_max`` molecules, failures
    first, in pages of ``page_size`` (the first page open)."""
    if n_max <= 0 or not len(table):
        return ""
    order = grid_order(table, stable_col)[:n_max]
    cells = []
    for pos in order:
        row = table.iloc[pos]
        mol = mols[pos]
        try:
            svg = depiction_svg(mol, highlight=_unstable_atoms(row))
        except Exception as e:  # noqa: BLE001 -- one undrawable molecule must not lose the report
            svg = f"<div class='nodraw'>cannot draw: {html.escape(str(e).splitlines()[0][:80])}</div>"
        tags = "".join(f"<span class='v {'ok' if good else 'bad' if good is False else 'info'}'>"
                       f"{html.escape(text)}</span>" for _, text, good in verdicts(row, stable_col))
        name = html.escape(f"#{int(row.get('index', pos))} {row.get('name') or ''} {row.get('formula') or ''}")
        smiles = html.escape(str(row.get("smiles") or row.get("smiles_largest_fragment") or ""))
        cells.append(f"<div class='cell' data-index='{int(row.get('index', pos))}'>{svg}"
                     f"<div class='name' title='{smiles}'>{name}</div><div class='verdicts'>{tags}</div></div>")
    pages = [cells[k:k + page_size] for k in range(0, len(cells), page_size)]
    shown = len(order)
    head = (f"<h2>Molecules ({shown} of {len(table)} shown, failures first)</h2>"
            f"<p>2D depictions (RDKit) of the validated molecules, unstable atoms in red; each with its verdicts. "
            f"{'Capped at ' + str(n_max) + ' (<code>depictions=N</code> shows more). ' if shown < len(table) else ''}"
            "</p>")
    body = []
    for k, page in enumerate(pages):
        first, last = k * page_size + 1, k * page_size + len(page)
        body.append(f"<details class='page'{' open' if k == 0 else ''}><summary>molecules {first}-{last}</summary>"
                    f"<div class='grid'>{''.join(page)}</div></details>")
    return head + "".join(body)


GRID_STYLE = (".grid{display:flex;flex-wrap:wrap;gap:6px}.cell{border:1px solid #ccc;width:224px;padding:2px;"
              "font-size:11px}.cell svg{display:block}.name{font-weight:bold;overflow:hidden;white-space:nowrap}"
              ".v{display:inline-block;margin:1px;padding:0 3px;border-radius:3px}.ok{background:#d8f0d8}"
              ".bad{background:#f6d0d0}.info{background:#e8e8f4}.viewer{width:320px;height:260px;position:relative;"
              "border:1px solid #ccc;display:inline-block;margin:3px}details.page>summary{cursor:pointer}")


def viewer_script() -> str:
    """The shipped 3Dmol.js (minified), as text to inline in a page."""
    return resources.files("molgen").joinpath("assets/3Dmol-min.js").read_text(encoding="utf-8")


@quiet_rdkit()
def viewer_html(mols: list[Molecule], indices: list[int], titles: list[str] | None = None) -> str:
    """Interactive 3D views (3Dmol.js, inlined; sticks and small spheres; drag to rotate) of ``mols[i]`` for
    ``i`` in ``indices``. An HTML fragment with its own scripts; empty when ``indices`` is empty."""
    from rdkit import Chem

    if not indices:
        return ""
    blocks, names = [], []
    for k, i in enumerate(indices):
        try:  # RDKit cannot write some generated molecules (e.g. an H with charge +3): they get no 3D view
            rd = mols[i].to_rdkit()
            rd.UpdatePropertyCache(strict=False)
            block = Chem.MolToMolBlock(rd, kekulize=False)
        except Exception:  # noqa: BLE001 -- RDKit raises RuntimeError and its own types here
            continue
        blocks.append(block)
        names.append(titles[k] if titles else f"#{i}")
    if not blocks:
        return ""
    divs = "".join(f"<div><div class='viewer' id='molgen-view-{k}'></div><div>{html.escape(n)}</div></div>"
                   for k, n in enumerate(names))
    data = json.dumps(blocks).replace("</", "<\\/")
    script = viewer_script().replace("</script", "<\\/script")
    init = ("(function(){var blocks=" + data + ";var made=0;"
            "for(var k=0;k<blocks.length;k++){var el=document.getElementById('molgen-view-'+k);"
            "try{var v=$3Dmol.createViewer(el,{backgroundColor:'white'});if(!v){continue;}"
            "v.addModel(blocks[k],'sdf');v.setStyle({},{stick:{radius:0.14},sphere:{scale:0.22}});"
            "v.zoomTo();v.render();made++;}catch(e){el.textContent='3D view unavailable: '+e;}}"
            "document.body.setAttribute('data-molgen-viewers',String(made));})();")
    return (f"<h2>3D views ({len(blocks)} molecules)</h2><p>Drag to rotate, scroll to zoom (3Dmol.js "
            f"{VIEWER_VERSION}, shipped with molgen; works offline).</p><div style='display:flex;flex-wrap:wrap'>"
            f"{divs}</div><script>{script}</script><script>{init}</script>")
