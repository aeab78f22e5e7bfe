"""The widget with the trained demo model on the plugin's sample data, against the generated truth.

One click near the centre of a nucleus on its largest slice must segment that nucleus (each IoU over
0.43, where a neighbour or the whole foreground scores about 0.1, and a mean of at least 0.52;
measured 0.715 / 0.464 / 0.469 here with the shipped v1.2 in the demo model's own window, 0.706 / 0.462
/ 0.472 in the dataset window the widget used before, 0.68 / 0.41 / 0.45 with v1.1, 0.58 / 0.28 / 0.33
with the model before), and propagating through z must
recover the whole nucleus on every slice where it is reasonably large.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from helpers import iou
from napari_sam2.engine import load_model
from napari_sam2.plugin._sample import sample_nuclei_3d
from napari_sam2.plugin._widget import Sam2Widget
from napari_sam2.training import synthetic


@pytest.fixture(scope="module")
def truth():
    return synthetic.sample_nuclei_3d().labels


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu")


def deepest_point(mask):
    depth = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    return np.unravel_index(int(np.argmax(depth)), depth.shape)


def setup(make_napari_viewer, qtbot, demo):
    viewer = make_napari_viewer()
    [(data, meta, _)] = sample_nuclei_3d()
    layer = viewer.add_image(data, **meta)
    widget = Sam2Widget(viewer, threaded=False)
    qtbot.addWidget(widget)
    widget.set_model(demo, "demo")
    return viewer, layer, widget


def click(viewer, layer, widget, z, rc, positive=True):
    world = layer.data_to_world((z, *rc))
    viewer.dims.set_point(0, world[0])
    widget.add_click(world, positive=positive)


@pytest.mark.slow
def test_demo_click_segments_sample_nuclei(make_napari_viewer, qtbot, demo, truth):
    viewer, layer, widget = setup(make_napari_viewer, qtbot, demo)
    ids = [i for i in np.unique(truth) if i > 0][:3]
    scores = []
    for n, obj in enumerate(ids, start=1):
        areas = (truth == obj).sum(axis=(1, 2))
        z = int(np.argmax(areas))
        click(viewer, layer, widget, z, deepest_point(truth[z] == obj))
        labels = viewer.layers[f"{layer.name} SAM2 labels"].data
        scores.append(iou(labels[z] == n, truth[z] == obj))
        widget.next_object()
    assert np.mean(scores) >= 0.52 and min(scores) > 0.43, scores


@pytest.mark.slow
def test_demo_propagation_recovers_every_slice(make_napari_viewer, qtbot, demo, truth):
    viewer, layer, widget = setup(make_napari_viewer, qtbot, demo)
    obj = int(np.bincount(truth.ravel())[1:].argmax()) + 1  # the largest nucleus
    areas = (truth == obj).sum(axis=(1, 2))
    z = int(np.argmax(areas))
    widget.live_check.setChecked(False)
    click(viewer, layer, widget, z, deepest_point(truth[z] == obj))
    widget.propagate(axis="z")
    labels = viewer.layers[f"{layer.name} SAM2 labels"].data
    assert iou(labels == 1, truth == obj) >= 0.75
    for s in range(truth.shape[0]):
        if areas[s] >= 0.3 * areas.max():
            assert iou(labels[s] == 1, truth[s] == obj) >= 0.6, s
        elif areas[s] == 0:
            assert (labels[s] == 1).sum() <= 0.1 * areas.max(), s
