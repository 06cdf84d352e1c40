"""The package's layers hold: every module imports (at module level or inside functions) only from its own layer
or lower ones, and every module belongs to a layer.

    data -> nn / generative -> validation / evaluation -> models -> training / runner / checkpoint -> pipelines
    -> api / cli
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import molgen

PACKAGE = Path(molgen.__file__).parent

#: layer of each top-level part of the package (a module's layer is that of its longest listed prefix)
LAYERS: dict[str, int] = {
    "molgen.errors": 0,
    "molgen.data": 0,
    "molgen.formatting": 0,
    "molgen.files": 0,
    "molgen.settings": 0,
    "molgen.spec": 0,
    "molgen.settings": 0,
    "molgen.nn": 1,
    "molgen.generative": 1,
    "molgen.conditioning": 1,
    "molgen.testing": 1,
    "molgen.validation": 2,
    "molgen.evaluation": 2,
    "molgen.models": 3,
    "molgen.config": 4,
    "molgen.config_schema": 4,
    "molgen.console": 4,
    "molgen.checkpoint": 4,
    "molgen.training": 4,
    "molgen.runner": 4,
    "molgen.pipelines": 5,
    "molgen.api": 6,
    "molgen.cli": 6,
    "molgen": 6,  # the package itself re-exports the API
}
NAMES = {0: "data", 1: "nn/generative", 2: "validation/evaluation", 3: "models", 4: "training/runner/checkpoint",
         5: "pipelines", 6: "api/cli"}


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, name: str | None = None) -> list[tuple[str, int]]:
    """Every molgen module imported by the file (absolute or relative, anywhere in the file) with its line;
    ``name`` is the file's module name (default: from its place in the package)."""
    name = name or module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "molgen"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "molgen":  # `from molgen import x` imports molgen.x (the package root is loaded anyway)
                out += [(f"molgen.{a.name}", node.lineno) for a in node.names]
            elif target.split(".")[0] == "molgen":
                out.append((target, node.lineno))
                # `from molgen import pipelines` / `from molgen.models import atom` import submodules
                out += [(f"{target}.{a.name}", node.lineno) for a in node.names
                        if layer_of(f"{target}.{a.name}") != layer_of(target)]
    return out


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "embedded" not in p.parts)


def test_every_module_has_a_layer():
    assert MODULES, PACKAGE
    missing = [module_name(p) for p in MODULES if layer_of(module_name(p)) is None]
    assert not missing, f"modules outside every layer (add them to LAYERS): {missing}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_imports_respect_the_layers(path):
    src = layer_of(module_name(path))
    bad = [f"line {line}: {target} ({NAMES[layer_of(target)]})" for target, line in imports_of(path)
           if layer_of(target) is not None and layer_of(target) > src]
    assert not bad, f"{module_name(path)} ({NAMES[src]}) imports from higher layers: {bad}"


def test_the_checker_sees_imports_inside_functions_and_relative_ones(tmp_path):
    fake = tmp_path / "probe.py"  # read as if it were molgen/data/probe.py
    fake.write_text("def f():\n    from molgen.models.propmolflow import PropMolFlow\nfrom ..runner import say\n")
    targets = {t for t, _ in imports_of(fake, "molgen.data.probe")}
    assert {"molgen.models.propmolflow", "molgen.runner"} <= targets
    assert all(layer_of(t) > 0 for t in targets)
