"""report.html in a real headless Chromium: it renders, every picture is there, the 3D views start, and the page
makes no network request. The browser comes from `python scripts/get_chromium.py` (CI runs it first)."""
import copy
import json
import os
from pathlib import Path

import pytest

from molgen.validation import validate

from .conftest import DATA


def _browser() -> dict | None:
    path = Path(os.environ.get("MOLGEN_CHROMIUM_JSON", Path.home() / ".cache" / "molgen" / "chromium" /
                               "browser.json"))
    if not path.is_file():
        return None
    info = json.loads(path.read_text())
    return info if info.get("executable") and Path(info["executable"]).exists() else None


BROWSER = _browser()
pytestmark = pytest.mark.skipif(BROWSER is None, reason="no headless Chromium: run python scripts/get_chromium.py")


@pytest.fixture(scope="module")
def report(tmp_path_factory, handmade):
    from molgen.data.io import read_molecules

    ions, _ = read_molecules(DATA / "ions.sdf")
    mols = [copy.deepcopy(m) for m in handmade.values()] + ions   # the session fixture stays as it was
    for k, m in enumerate(mols):      # a property-conditioned set: target and a "regressor" prediction
        m.properties["gap"] = 5.0 + 0.1 * k
        m.properties["pred_gap"] = 5.2 + 0.08 * k
    out = tmp_path_factory.mktemp("report")
    res = validate(mols, out=out, posebusters="fast", distributions=False, fcd=False, progress=False,
                   depictions=12, viewer=4)
    return res, out / "report.html"


def _open(path: Path):
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    env = {**os.environ, **BROWSER.get("env", {})}
    browser = pw.chromium.launch(executable_path=BROWSER["executable"], env=env, args=BROWSER.get("args", []),
                                 timeout=60_000)
    page = browser.new_page(viewport={"width": 1200, "height": 1400})
    requests, errors = [], []
    page.on("request", lambda r: requests.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    page.wait_for_function("document.body.hasAttribute('data-molgen-viewers')", timeout=30_000)
    return pw, browser, page, requests, errors


def test_report_renders_offline_with_pictures_and_3d_views(report):
    res, path = report
    pw, browser, page, requests, errors = _open(path)
    try:
        n_mol = len(res.table)
        assert errors == []
        # only the page itself is loaded: plots are data: URIs, the 3D viewer's script is inline
        assert [u for u in requests if not u.startswith("data:")] == [path.as_uri()]
        # every plot image decoded (stability, histograms, the target-vs-regressor scatter)
        assert page.evaluate("Array.from(document.images).length") >= 3
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        # the grid: 12 of the 17 molecules drawn, failures first, each with its verdicts
        cells = page.locator(".cell")
        assert cells.count() == 12 < n_mol
        assert page.locator(".cell svg").count() == 12
        first = cells.nth(0)
        assert "invalid" in first.inner_text()
        assert page.locator(".cell .bad").count() >= 5
        assert page.evaluate("document.querySelector('.cell svg').getBoundingClientRect().width") > 100
        # four 3D views, each a WebGL canvas of the viewer's size
        assert page.evaluate("typeof $3Dmol") == "object"
        assert page.evaluate("document.body.getAttribute('data-molgen-viewers')") == "4"
        assert page.locator(".viewer canvas").count() == 4
        assert page.evaluate("document.querySelector('.viewer canvas').getBoundingClientRect().width") > 200
    finally:
        browser.close()
        pw.stop()
