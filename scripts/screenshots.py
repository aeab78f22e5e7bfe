"""Screenshots of the real widget on the plugin's sample data, and the sync-vs-threaded timing.

Run under a virtual screen (vispy needs an OpenGL context; QT_QPA_PLATFORM=offscreen is not enough):

    xvfb-run -a python scripts/screenshots.py            # PNGs into docs/images/
    xvfb-run -a python scripts/screenshots.py --timing   # segment + propagate, synchronous vs threaded

The demo model is used when it is installed (``load_model("demo")``); otherwise a SAM2 with the demo
model's architecture and random weights, so the masks are not meaningful. The script prints which
one it used, and docs/plugin.md says so under each picture.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from napari_sam2.engine import load_model
from napari_sam2.model import Sam2Model
from napari_sam2.model.checkpoint import CheckpointError
from napari_sam2.model.config import DEMO_CONFIG
from napari_sam2.training import synthetic

OUT = Path(__file__).resolve().parents[1] / "docs" / "images"


def get_model() -> tuple[Sam2Model, str]:
    try:
        return load_model("demo", device="cpu"), "demo"
    except CheckpointError:
        torch.manual_seed(0)
        return Sam2Model(DEMO_CONFIG).eval(), "random weights (demo architecture)"


def centre_click(truth: np.ndarray, obj: int) -> tuple[int, tuple[int, int]]:
    """The largest slice of ``obj`` and its deepest pixel there."""
    z = int(np.argmax((truth == obj).sum(axis=(1, 2))))
    depth = ndimage.distance_transform_edt(np.pad(truth[z] == obj, 1))[1:-1, 1:-1]
    return z, tuple(int(v) for v in np.unravel_index(int(np.argmax(depth)), depth.shape))


def open_viewer(model, which: str, threaded: bool, show: bool = True):
    """napari at a laptop's 1366 x 768, then Plugins > SAM2 segmentation and File > Open Sample >
    Nuclei 3D, in that order, as a person opens them."""
    import napari

    viewer = napari.Viewer(show=show)
    viewer.window._qt_window.resize(1366, 768)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM2 segmentation")
    [layer] = viewer.open_sample("napari-sam2", "nuclei_3d")
    widget.runner.threaded = threaded
    widget.set_model(model, which)
    return viewer, layer, widget


def click(viewer, layer, widget, z: int, rc: tuple[int, int]) -> None:
    world = layer.data_to_world((z, *rc))
    viewer.dims.set_point(0, world[0])
    widget.add_click(world)
    widget.runner.wait(600)


def settle(viewer) -> None:
    """Deliver pending Qt events (the worker's finished signals) and close napari's notification
    toasts (its PyQt5 deprecation notice would cover the image)."""
    from napari._qt.dialogs.qt_notification import NapariQtNotification
    from qtpy.QtWidgets import QApplication

    end = time.perf_counter() + 0.5
    while time.perf_counter() < end:
        QApplication.processEvents()
        time.sleep(0.02)
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()
    QApplication.processEvents()
    if viewer.dims.ndisplay == 2:
        viewer.reset_view()  # the canvas has its final size only now
        QApplication.processEvents()


def screenshots(model, which: str) -> None:
    truth = synthetic.sample_nuclei_3d().labels
    viewer, layer, widget = open_viewer(model, which, threaded=True)
    ids = [int(i) for i in np.unique(truth) if i > 0]
    order = sorted(ids, key=lambda i: -(truth == i).sum())[:3]
    z, rc = centre_click(truth, order[0])
    click(viewer, layer, widget, z, rc)
    viewer.dims.set_point(0, layer.data_to_world((z, 0, 0))[0])
    settle(viewer)
    viewer.screenshot(str(OUT / "plugin-click.png"), canvas_only=False)
    widget.show_advanced(True)
    settle(viewer)
    widget.scroll.widget().grab().save(str(OUT / "plugin-dock.png"))  # the whole dock, unscrolled
    widget.show_advanced(False)

    widget.propagate(axis="z")
    widget.runner.wait(600)
    for obj in order[1:]:
        widget.next_object()
        zo, rco = centre_click(truth, obj)
        click(viewer, layer, widget, zo, rco)
        widget.propagate(axis="z")
        widget.runner.wait(600)
    viewer.dims.set_point(0, layer.data_to_world((z, 0, 0))[0])
    settle(viewer)
    viewer.screenshot(str(OUT / "plugin-propagated.png"), canvas_only=False)

    viewer.dims.ndisplay = 3
    viewer.layers[layer.name].visible = False
    for name in ("SAM2 prompts", "SAM2 boxes"):
        viewer.layers[name].visible = False
    viewer.camera.angles = (-20, 30, 60)
    settle(viewer)
    viewer.screenshot(str(OUT / "plugin-3d.png"), canvas_only=True)
    print(f"screenshots in {OUT} with the model: {which}")
    viewer.close()


def timing(model, which: str, repeats: int) -> None:
    """Seconds for one click (encode + decode) and a propagation through all 32 slices, per mode."""
    truth = synthetic.sample_nuclei_3d().labels
    obj = int(np.bincount(truth.ravel())[1:].argmax()) + 1
    z, rc = centre_click(truth, obj)
    rows = []
    for threaded in (False, True) * repeats:
        viewer, layer, widget = open_viewer(model, which, threaded=threaded, show=False)
        widget.live_check.setChecked(False)
        world = layer.data_to_world((z, *rc))
        viewer.dims.set_point(0, world[0])
        widget.add_click(world)
        t0 = time.perf_counter()
        widget.segment()
        widget.runner.wait(600)
        t1 = time.perf_counter()
        widget.propagate(axis="z")
        widget.runner.wait(600)
        t2 = time.perf_counter()
        rows.append((threaded, t1 - t0, t2 - t1))
        viewer.close()
    print(f"model: {which}; torch threads: {torch.get_num_threads()}; repeats: {repeats}")
    for threaded in (False, True):
        seg = statistics.median(r[1] for r in rows if r[0] == threaded)
        prop = statistics.median(r[2] for r in rows if r[0] == threaded)
        print(
            f"{'threaded' if threaded else 'synchronous':12s} segment {seg:6.2f} s   propagate 32 slices {prop:6.2f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timing", action="store_true", help="measure synchronous vs threaded instead")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    model, which = get_model()
    if args.timing:
        timing(model, which, args.repeats)
    else:
        OUT.mkdir(parents=True, exist_ok=True)
        screenshots(model, which)


if __name__ == "__main__":
    main()
