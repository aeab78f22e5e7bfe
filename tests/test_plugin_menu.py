"""The plugin opened as a person opens it: napari first, then the plugin's menu entries.

Importing ``triton`` (or ``torch._dynamo``, which imports it) into a napari that already drew with
Mesa's OpenGL crashes the process (their LLVMs clash; issue 23). Tests that import the plugin before
making a viewer never see it, so this one runs in a fresh process in napari's order: the viewer,
then ``Plugins > SAM2 segmentation``, then ``File > Open Sample > Nuclei 3D``, then a click with the
demo model, and checks ``sys.modules`` after each.
"""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys

import napari

def check(step):
    loaded = [m for m in ("triton", "torch._dynamo", "torchvision") if m in sys.modules]
    assert not loaded, f"after {step}: {loaded} imported"

viewer = napari.Viewer(show=False)
check("making the viewer")
assert "napari_sam2.plugin._widget" not in sys.modules  # the plugin comes second, as in napari
_dock, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM2 segmentation")
check("Plugins > SAM2 segmentation")
[layer] = viewer.open_sample("napari-sam2", "nuclei_3d")
check("File > Open Sample > Nuclei 3D")
widget.runner.threaded = False
widget.load_model("demo", device="cpu")
viewer.dims.set_current_step(0, 16)
widget.add_click((32.0, 128.0, 128.0))  # live mode: encodes and segments
assert widget.model_name == "demo" and not widget.last_error, widget.last_error
check("a click with the demo model")
print("ok")
"""


def test_menu_actions_in_a_running_napari_import_no_triton():
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stdout + run.stderr
