"""The widget on a real image, as a user meets it: napari is started, the plugin opened from its menu
action, the default demo model picked, and nuclei of the 2018 Data Science Bowl image (``dsb2018``,
fetched with pip on first use, never trained on) clicked with real mouse events on the canvas.

The image has a few very bright nuclei among many dim ones. In the window the widget used before (0.5-99.99
percentiles) the dim ones sat at a fifth of it and the demo model answered most clicks on them with an
empty or speck-sized mask (dsb2018 1-click IoU 0.083; all six nuclei clicked below: 0); in the demo model's own window
(``engine.intensity.foreground_window``) each click below segments its nucleus.
"""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtWidgets import QApplication

from helpers import iou
from helpers.gui import camera, click, open_widget

pytestmark = pytest.mark.slow


def dim_nuclei(labels, image, n=6):
    """The ``n`` largest nuclei of the bottom-left quarter, where the dim nuclei lie (every one of them
    under half the brightest nucleus's mean), as (id, row, col of the deepest point)."""
    from scipy import ndimage

    quarter = np.zeros(labels.shape, bool)
    quarter[256:, :256] = True
    ids = [i for i in np.unique(labels[quarter]) if i and (labels == i)[~quarter].sum() == 0]
    ids = sorted(ids, key=lambda i: -(labels == i).sum())[:n]
    out = []
    for i in ids:
        depth = ndimage.distance_transform_edt(labels == i)
        out.append((int(i), *np.unravel_index(int(np.argmax(depth)), depth.shape)))
    return out


def test_clicks_on_dim_real_nuclei_segment_them(make_napari_viewer, qtbot):
    from napari_sam2.training.datasets import load_dsb2018

    image, labels = load_dsb2018()
    viewer = make_napari_viewer(show=True)
    layer = viewer.add_image(image, name="dsb2018")
    _, widget = open_widget(viewer, qtbot)  # the widget's own default model: the shipped demo model
    assert widget.model_combo.currentText() == "demo" and widget.model is None  # loaded at the first click
    camera(viewer).center = (256, 256)
    camera(viewer).zoom = 1.0
    QApplication.processEvents()
    nuclei = dim_nuclei(labels, image)
    brightest = max(image[labels == i].mean() for i in np.unique(labels) if i)
    assert all(image[labels == i].mean() < brightest / 2 for i, _, _ in nuclei)
    scores = []
    for n, (obj, row, col) in enumerate(nuclei, start=1):
        click(viewer, layer.data_to_world((row, col)))
        qtbot.waitUntil(lambda n=n: f"{layer.name} SAM2 labels" in viewer.layers, timeout=30000)
        out = viewer.layers[f"{layer.name} SAM2 labels"].data
        qtbot.waitUntil(lambda n=n, out=out: (out == n).any(), timeout=30000)
        scores.append(iou(out == n, labels == obj))
        widget.next_object()
    text = widget.data.window_label.text()
    assert widget.model_name == "demo" and text.startswith("the demo model's window"), text
    # measured 0.891 / 0.834 / 0.729 / 0.873 / 0.903 / 0.669 (mean 0.816); the same clicks through the
    # engine in the widget's former window (0.5-99.99 %) give IoU 0 for all six, in the robust one 0.31
    assert np.mean(scores) >= 0.80 and min(scores) >= 0.65, scores


def test_the_console_segments_dim_real_nuclei_in_the_widgets_window(make_napari_viewer, qtbot):
    """Scripting from napari's console (``napari_sam2.plugin.console``) on the same image layer: by
    default the model input window is the widget's (the demo model's own window here), so the same
    dim nuclei are segmented as by clicks in the widget; ``window="display"`` (the layer's contrast
    limits, napari's full data range here) is what the console used before and finds almost nothing."""
    from napari_sam2.engine import load_model
    from napari_sam2.plugin import console
    from napari_sam2.plugin._data import default_window
    from napari_sam2.plugin._widget import Sam2Widget
    from napari_sam2.training.datasets import load_dsb2018

    image, labels = load_dsb2018()
    viewer = make_napari_viewer()
    layer = viewer.add_image(image, name="dsb2018")
    demo = load_model("demo", device="cpu")
    widget = Sam2Widget(viewer, threaded=False)
    qtbot.addWidget(widget)
    widget.set_model(demo, "demo")
    assert default_window(layer, demo, lambda: image)[0] == widget.data.window(layer)
    scores = {"default": [], "display": []}
    for obj, row, col in dim_nuclei(labels, image):
        for name, window in (("default", None), ("display", "display")):
            out = console.segment(layer, np.array([[row, col]]), model=demo, window=window)
            scores[name].append(iou(out > 0, labels == obj))
    # measured 0.892 / 0.847 / 0.723 / 0.873 / 0.902 / 0.545 (mean 0.797; the widget's clicks land a
    # fraction of a pixel elsewhere: 0.669 on the last one); with window="display" 0 for each of the six
    assert np.mean(scores["default"]) >= 0.78 and min(scores["default"]) >= 0.53, scores
    assert np.mean(scores["display"]) < 0.1, scores
    with pytest.raises(ValueError, match="contrast limits"):
        console.segment(image, np.array([[10, 10]]), model=demo, window="display")
