"""The demo viewer of ``napari-sam2 demo``: the sample nuclei volume and the SAM2 widget on the demo model.

It lives in the plugin (the only layer that imports napari); the command line calls :func:`run_demo`.
"""

from __future__ import annotations

import napari

from ..api import load_model
from ._sample import sample_nuclei_3d
from ._widget import Sam2Widget

__all__ = ["build_demo", "run_demo"]


def build_demo(show: bool = True) -> tuple[napari.Viewer, Sam2Widget]:
    """A viewer with the sample volume and the SAM2 widget docked, on the demo model: (viewer, widget)."""
    viewer = napari.Viewer(show=show)
    for layer_data in sample_nuclei_3d():
        kwargs = layer_data[1] if len(layer_data) > 1 else {}
        kind = layer_data[2] if len(layer_data) > 2 else "image"
        getattr(viewer, f"add_{kind}")(layer_data[0], **(kwargs or {}))
    widget = Sam2Widget(viewer)
    viewer.window.add_dock_widget(widget, name="SAM2", area="right")
    widget.set_model(load_model("demo", device="cpu"), name="demo")
    return viewer, widget


def run_demo(show: bool = True) -> None:
    """Open the demo and run napari's event loop; without ``show``, set it up, print it and close."""
    viewer, widget = build_demo(show=show)
    if not show:
        print(f"layers: {', '.join(layer.name for layer in viewer.layers)}; widget: {type(widget).__name__}")
        viewer.close()
        return
    napari.run()
