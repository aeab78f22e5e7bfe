"""Shared fixtures: seeded models with identical random weights in ours and in the reference."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

from napari_sam2 import select_device

# napari (through qtpy) and pytest-qt must use the same Qt binding: pytest-qt tries PyQt6 first, qtpy
# PyQt5 first. PyQt6 is the binding of the testing extra; with PyQt5 alone both fall back to it.
os.environ.setdefault("QT_API", "pyqt6")

# torchvision (imported by the reference sam2 and the NMS check) loads torch._dynamo and triton, whose LLVM
# crashes the process when Mesa's OpenGL has already loaded its own (docs/plugin.md). The plugin never
# imports them; the tests that use them must not depend on running before the first napari viewer, so
# they are loaded here, first. tests/test_plugin_menu.py checks the plugin's own order in a subprocess.
with contextlib.suppress(ImportError):  # the testing extra brings it
    import torchvision.ops  # noqa: F401

TEST_DEVICE_ENV_VAR = "NAPARI_SAM2_TEST_DEVICE"


def _test_device() -> torch.device:
    """The device of the parity and propagation tests: ``NAPARI_SAM2_TEST_DEVICE`` ("cuda", "cuda:1",
    ...; default "cpu"). benchmarks/gpu_check.py sets it to run those tests on a GPU. Tests that honour
    it import ``TEST_DEVICE`` and move their models and inputs there; the others stay on the CPU.

    On CUDA, TF32 is turned off (cuDNN enables it for convolutions by default), so float32 there is
    float32 and the CPU tolerances of the parity tests apply unchanged.
    """
    device = select_device(os.environ.get(TEST_DEVICE_ENV_VAR) or "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    return device


TEST_DEVICE = _test_device()


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_report_header(config):
    return f"napari-sam2 test device ({TEST_DEVICE_ENV_VAR}): {TEST_DEVICE}"


def require_reference():
    """Import the reference package; in CI its absence is an error, not a skip."""
    if os.environ.get("CI"):
        import sam2  # noqa: F401  (fails loudly: CI must install it)
    else:
        pytest.importorskip("sam2", reason="the reference sam2==1.1.0 is installed by scripts/setup.sh")


@pytest.fixture(scope="module", autouse=True)
def _module_threads():
    """A module that sets torch's thread count (some pin one thread for steady figures) does not
    pass it on to the modules after it: before this, every test after ``test_automask_demo`` ran
    on one thread."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _test_threads():
    """The same for a test that sets the thread count in its body."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.inference_mode():
        yield


# ------------------------------------------------------------------ files the API and CLI tests share


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A random-weight demo-architecture checkpoint in the official layout (helpers.save_tiny)."""
    from helpers import save_tiny

    return save_tiny(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def sharp_ckpt(tmp_path_factory):
    """:func:`tiny_ckpt` with decisive mask logits, for the automatic generator (helpers.save_sharp)."""
    from helpers import save_sharp

    return save_sharp(tmp_path_factory.mktemp("models"))


@pytest.fixture
def vol_file(tmp_path):
    """helpers.make_volume() as a (z, y, x) TIFF."""
    from helpers import make_volume, write_tiff

    return write_tiff(tmp_path / "vol.tif", make_volume())
