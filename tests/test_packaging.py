"""Packaging checks: the napari manifest, its entry point and the runtime dependencies (the import
rules are in test_layers.py)."""

import importlib.util
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_MANIFEST = ROOT / "src" / "napari_sam2" / "napari.yaml"
DIST_NAME = "napari-sam2"


def test_root_manifest_is_identical_to_packaged_manifest():
    assert (ROOT / "napari.yaml").read_bytes() == PACKAGE_MANIFEST.read_bytes(), (
        "napari only loads src/napari_sam2/napari.yaml; copy it over the root napari.yaml"
    )


def test_packaged_manifest_is_valid_and_discoverable():
    npe2 = pytest.importorskip("npe2")
    manifest = npe2.PluginManifest.from_file(PACKAGE_MANIFEST)
    assert manifest.name == DIST_NAME

    found = [ep for ep in entry_points(group="napari.manifest") if ep.name == DIST_NAME]
    assert found, "no napari.manifest entry point: install the package with `pip install -e .`"
    assert found[0].value == "napari_sam2:napari.yaml"
    module, _, resource = found[0].value.partition(":")
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None
    installed = Path(spec.origin).parent / resource
    assert installed.is_file()
    assert npe2.PluginManifest.from_file(installed).name == DIST_NAME


def test_runtime_dependencies_have_no_qt_binding():
    # napari-plugin-template: users choose their Qt binding (napari[all], or the testing extra).
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [canonicalize_name(Requirement(dep).name) for dep in project["dependencies"]]
    offending = [name for name in names if name.startswith(("pyqt", "pyside"))]
    assert not offending, f"runtime dependencies must not include a Qt binding: {offending}"


# distributions imported under another name, and those used without an import
IMPORT_NAMES = {"scikit-image": "skimage"}
NOT_IMPORTED = {"imagecodecs": "tifffile's codecs for LZW, JPEG and other TIFF compressions"}


def test_every_runtime_dependency_is_imported_by_the_package():
    """A dependency nothing imports (magicgui was one) is dropped, or NOT_IMPORTED says why it stays."""
    import ast

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [canonicalize_name(Requirement(dep).name) for dep in project["dependencies"]]
    imported = set()
    for path in (ROOT / "src" / "napari_sam2").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    unused = [n for n in names if n not in NOT_IMPORTED and IMPORT_NAMES.get(n, n) not in imported]
    assert not unused, f"runtime dependencies nothing in src/napari_sam2 imports: {unused}"
