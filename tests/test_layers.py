"""The package's layers, checked on the source: every import of every module, read with ``ast``.

Importing modules (as an earlier test did) sees only what the imported faces pull in; walking the source
sees every import, including those inside functions and ``TYPE_CHECKING`` blocks. The rules are those of
docs/architecture.md:

* napari, qtpy, magicgui and the Qt bindings are imported only under ``plugin/``;
* arrows point down the layers: ``model`` <- ``engine`` <- ``api`` <- the faces (``plugin``, ``cli``), and
  ``training`` (model-making tools) <- the faces; the runtime (``model``, ``engine``, ``api``) never imports
  ``training``, a face or a layer above its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "napari_sam2"
GUI = {"napari", "qtpy", "magicgui", "PyQt5", "PyQt6", "PySide2", "PySide6", "vispy", "superqt", "app_model"}

# the layers each layer may import (besides itself); "" is the package's top-level __init__
ALLOWED = {
    "model": set(),
    "engine": {"model"},
    "api": {"engine", "model"},
    "training": {"engine", "model"},
    "plugin": {"api", "engine", "model", "training", ""},  # training: the generated sample data
    "cli": {"api", "engine", "model", "training", "plugin", ""},  # plugin: `napari-sam2 demo` opens napari
    "": {"api", "engine", "model"},
}


def _layer(module: str) -> str:
    """The layer of a module of the package: its sub-package, or "" for the top level (`__version__`)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and (PACKAGE / parts[1]).is_dir() else ""


def _imports(path: Path, root: Path = PACKAGE) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file of the package at ``root``."""
    rel = path.relative_to(root.parent).with_suffix("")
    module = ".".join(rel.parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    if package.endswith(".__init__"):
        package = package[: -len(".__init__")]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            if target == "napari_sam2":  # `from napari_sam2 import training` names a layer too
                found += [(node.lineno, f"napari_sam2.{alias.name}") for alias in node.names]
    return found


def _sources() -> list[Path]:
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50, "the package's sources were not found"
    return files


def _layer_of_file(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else ""


def test_gui_modules_only_under_plugin():
    offenders = [
        f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
        for path in _sources()
        if _layer_of_file(path) != "plugin"
        for line, target in _imports(path)
        if target.split(".")[0] in GUI
    ]
    assert not offenders, "napari/Qt outside plugin/:\n" + "\n".join(offenders)


def test_no_import_against_the_layer_direction():
    offenders = []
    for path in _sources():
        here = _layer_of_file(path)
        for line, target in _imports(path):
            if not target.startswith("napari_sam2."):
                continue
            there = _layer(target)
            if there != here and there not in ALLOWED[here]:
                offenders.append(
                    f"{path.relative_to(PACKAGE.parent)}:{line} ({here or 'top'}) imports {target}"
                )
    assert not offenders, "imports against the layer direction:\n" + "\n".join(offenders)


def test_every_layer_is_known():
    layers = {_layer_of_file(p) for p in _sources()}
    assert layers <= set(ALLOWED), (
        f"a new layer needs a rule here and in docs/architecture.md: {layers - set(ALLOWED)}"
    )


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from ..engine.labels import LabelWriter\n", "napari_sam2.engine.labels"),
        ("from . import _parsing\n", "napari_sam2.cli"),
        ("from .. import training\n", "napari_sam2.training"),
        ("def f():\n    import napari\n", "napari"),
    ],
)
def test_the_walker_resolves_relative_and_nested_imports(tmp_path, source, expected):
    """The check itself: a relative import resolves to its absolute module, an import inside a function counts."""
    root = tmp_path / "napari_sam2"
    (root / "cli").mkdir(parents=True)
    (root / "cli" / "probe.py").write_text(source)
    assert expected in [target for _, target in _imports(root / "cli" / "probe.py", root)]


def test_no_test_module_imports_another():
    """Shared builders live in tests/helpers/ and fixtures in conftest.py: a test module that
    imports another one runs (and couples to) that module's tests' setup."""
    tests = Path(__file__).resolve().parent
    modules = {p.stem for p in tests.glob("test_*.py")}
    offenders = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(tests)}:{node.lineno} imports {n}" for n in names if n in modules
            ]
    assert not offenders, "\n".join(offenders)
