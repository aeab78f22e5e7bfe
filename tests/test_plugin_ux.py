"""The widget as a person meets it (issue 23): opened from napari's plugin menu onto a shown viewer,
driven with real mouse clicks and key presses on the canvas, with the shipped demo model.

Covers: prompt layers made or adopted on open, selection and layer order after the first mask
(item 2); marker size on screen (3); the model's intensity window (5); corrections that re-propagate
only their range, a second Shift-F during a run (6); closing, removing layers and switching the
image during a task (7); the dock's fit, tooltips, polarity colours, long errors and the demo-model
notice (8).
"""

from __future__ import annotations

import os
import subprocess
import sys

import dask.array as da
import numpy as np
import pytest
from napari.utils.notifications import notification_manager
from qtpy.QtCore import Qt
from qtpy.QtWidgets import QAbstractButton, QAbstractSpinBox, QApplication, QComboBox
from scipy import ndimage

from helpers.gui import PLUGIN, camera, click, key, open_widget
from napari_sam2.api.session import RecordingWriter, propagate, propagation_tracker
from napari_sam2.engine import Prompt, load_model, open_image
from napari_sam2.engine.intensity import apply_window, dataset_window, foreground_window, robust_window
from napari_sam2.model.weights import WeightsUnavailableError
from napari_sam2.plugin._model_picker import DEMO_NOTICE
from napari_sam2.plugin._prompt_panel import POLARITY_STYLE
from napari_sam2.plugin._prompts import MARKER_PIXELS
from napari_sam2.plugin._sample import sample_nuclei_3d
from napari_sam2.plugin._tasks import STATUS_CHARS
from napari_sam2.training import synthetic


@pytest.fixture(scope="module")
def demo():
    return load_model("demo", device="cpu")


@pytest.fixture(scope="module")
def truth():
    return synthetic.sample_nuclei_3d().labels


def iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def nucleus_centre(truth, obj):
    """(z, row, col) of the deepest point of nucleus ``obj`` on its largest slice."""
    z = int(np.argmax((truth == obj).sum(axis=(1, 2))))
    depth = ndimage.distance_transform_edt(truth[z] == obj)
    return (z, *np.unravel_index(int(np.argmax(depth)), depth.shape))


def largest(truth):
    return int(np.bincount(truth.ravel())[1:].argmax()) + 1


def sample_viewer(make_napari_viewer):
    viewer = make_napari_viewer(show=True)
    [layer] = viewer.open_sample(PLUGIN, "nuclei_3d")
    return viewer, layer


def messages_since(n):
    return [str(r.message) for r in notification_manager.records[n:]]


# ---------------------------------------------------------------------------------------------- item 2
def test_first_click_on_the_canvas_segments_and_reopening_adopts_the_layers(
    make_napari_viewer, qtbot, demo, truth
):
    viewer, layer = sample_viewer(make_napari_viewer)
    dock, widget = open_widget(viewer, qtbot, demo)
    points = viewer.layers["SAM2 prompts"]
    assert [ly.name for ly in viewer.layers][-2:] == ["SAM2 boxes", "SAM2 prompts"]
    assert viewer.layers.selection.active is points and points.mode == "add"

    obj = largest(truth)
    z, r, c = nucleus_centre(truth, obj)
    viewer.dims.set_current_step(0, z)
    click(viewer, layer.data_to_world((z, r, c)))  # the very first click, no button pressed before
    labels = viewer.layers[f"{layer.name} SAM2 labels"]
    assert len(points.data) == 1 and iou(labels.data[z] == 1, truth[z] == obj) > 0.6
    names = [ly.name for ly in viewer.layers]
    assert (
        names.index(labels.name) < names.index("SAM2 boxes") < names.index("SAM2 prompts")
    )  # markers on top
    assert viewer.layers.selection.active is points and points.mode == "add"  # never the labels layer

    key(viewer, Qt.Key.Key_T)  # T on the prompts layer: the next click is negative
    assert widget.session.positive is False and widget.polarity_button.text().startswith("negative")
    other = largest(np.where(truth == obj, 0, truth))
    _, r2, c2 = nucleus_centre(truth, other)
    click(viewer, layer.data_to_world((z, r2, c2)))
    assert list(points.features["positive"]) == [True, False]

    viewer.window.remove_dock_widget(dock)  # close the dock, then Plugins > SAM2 segmentation again
    _, again = open_widget(viewer, qtbot, demo)
    assert [ly.name for ly in viewer.layers].count("SAM2 prompts") == 1
    assert "SAM2 prompts [1]" not in viewer.layers and again.points_layer is points
    assert again.labels_combo.currentText() == labels.name
    before = labels.data.copy()
    again.next_object()
    z3, r3, c3 = nucleus_centre(truth, other)
    viewer.dims.set_current_step(0, z3)
    click(viewer, layer.data_to_world((z3, r3, c3)))
    assert len(points.data) == 1 and iou(labels.data[z3] == 2, truth[z3] == other) > 0.5
    assert (labels.data[before == 1] == 1).all()  # the first object stays
    assert not widget.last_error and not again.last_error


def test_the_output_layer_comes_with_the_prompt_layers_unless_it_cannot_be_made(
    make_napari_viewer, qtbot, monkeypatch
):
    """The labels layer is made when the widget opens (napari's cost of adding it must not fall on
    the first click); a volume whose labels cannot be allocated still opens the widget."""
    from napari_sam2.plugin import _data
    from napari_sam2.plugin._layers import LayerError

    viewer, layer = sample_viewer(make_napari_viewer)
    _, widget = open_widget(viewer, qtbot)
    names = [ly.name for ly in viewer.layers]
    assert names[-3:] == [f"{layer.name} SAM2 labels", "SAM2 boxes", "SAM2 prompts"]
    assert widget.labels_combo.currentText() == f"{layer.name} SAM2 labels"
    assert viewer.layers[names[-3]].data.shape == layer.data.shape and not viewer.layers[names[-3]].data.any()

    class NoMemoryNumpy:  # numpy whose zeros() cannot allocate, as for a huge volume
        def __getattr__(self, name):
            return getattr(np, name)

        def zeros(self, *args, **kwargs):
            raise MemoryError("Unable to allocate")

    monkeypatch.setattr(_data, "np", NoMemoryNumpy())
    viewer2, _ = sample_viewer(make_napari_viewer)
    _, widget2 = open_widget(viewer2, qtbot)
    names2 = [ly.name for ly in viewer2.layers]
    assert names2[-2:] == ["SAM2 boxes", "SAM2 prompts"] and not any("SAM2 labels" in n for n in names2)
    with pytest.raises(
        LayerError, match=r"a labels layer of \(32, 256, 256\) \(0.0 GiB\) does not fit in memory"
    ):
        widget2.labels_layer()  # what the first write reports, in one line
    assert widget2.points_layer is not None and not widget2.last_error


# ---------------------------------------------------------------------------------------------- item 3
@pytest.mark.parametrize(
    ("shape", "scale"),
    [((8, 64, 64), (0.29, 0.26, 0.26)), ((6000, 6000), (1.0, 1.0)), ((3, 300, 900), (2.0, 0.5, 0.5))],
)
def test_markers_are_6_to_20_screen_pixels_at_fit_zoom(make_napari_viewer, qtbot, shape, scale):
    viewer = make_napari_viewer(show=True)
    data = da.zeros(shape, dtype=np.uint16, chunks=(1,) * (len(shape) - 2) + (1024, 1024))
    layer = viewer.add_image(data, scale=scale, contrast_limits=(0, 1))
    _, widget = open_widget(viewer, qtbot)
    viewer.reset_view()
    QApplication.processEvents()
    widget.live_check.setChecked(False)
    centre = np.array(shape) / 2
    click(viewer, layer.data_to_world(centre))
    points = widget.points_layer
    assert len(points.data) == 1
    yx = np.asarray(points.scale[-2:], dtype=float)
    on_screen = float(points.size[0]) * float(np.sqrt(yx.prod())) * camera(viewer).zoom
    assert 6 <= on_screen <= 20, on_screen
    assert on_screen == pytest.approx(MARKER_PIXELS, rel=0.2)


# ---------------------------------------------------------------------------------------------- item 5
def sparse_nuclei(seed=0):
    """A dim, noisy (16, 128, 128) volume with three small bright nuclei (0.14 % of the voxels)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(1000, 40, (16, 128, 128))
    zz, yy, xx = np.mgrid[:16, :128, :128]
    inside = np.zeros(image.shape, bool)
    for z, y, x in ((5, 30, 40), (8, 80, 90), (11, 100, 30)):
        inside |= (zz - z) ** 2 * 4 + (yy - y) ** 2 + (xx - x) ** 2 <= 16
    image[inside] = rng.normal(20000, 2000, inside.sum())
    return image.astype(np.uint16), inside


def test_dataset_window_keeps_sparse_bright_nuclei_below_saturation():
    image, inside = sparse_nuclei()
    assert inside.mean() < 0.005
    robust = apply_window(image[inside], robust_window(image))
    assert np.median(robust) == 1.0  # the 99.5th percentile lies in the background: nuclei saturate
    window = dataset_window(open_image(image, axes="zyx").sample_values())
    nuclei = apply_window(image[inside], window)
    background = apply_window(image[~inside], window)
    assert 0.6 < np.median(nuclei) < 0.95 and (nuclei >= 1.0).mean() < 0.1
    assert np.percentile(background, 99) < 0.02


def test_widget_window_is_fixed_by_default_and_display_contrast_on_request(make_napari_viewer, qtbot, demo):
    viewer = make_napari_viewer(show=True)
    image, _ = sparse_nuclei()
    layer = viewer.add_image(image, name="sparse")
    _, widget = open_widget(viewer, qtbot, demo)
    fixed = widget.data.window(layer)  # the demo model's own window: set by the nuclei, not the background
    assert fixed == foreground_window(open_image(image, axes="zyx").sample_values()).as_tuple()
    assert 20000 < fixed[1] < 20000 + 2 * 2000
    text = widget.data.window_label.text()
    assert text.startswith("the demo model's window") and f"{fixed[0]:g}" in text and "(fixed)" in text
    layer.contrast_limits = (0, 1500)  # the user looks at the background: the model input stays
    viewer.dims.set_current_step(0, 8)
    click(viewer, layer.data_to_world((8, 80, 90)))
    assert widget.session.undo_stack[-1].window == fixed
    widget.data.window_combo.setCurrentText("display contrast")
    assert widget.data.window(layer) == (0.0, 1500.0)
    assert "display contrast" in widget.data.window_label.text()
    click(viewer, layer.data_to_world((8, 82, 92)))
    assert widget.session.undo_stack[-1].window == (0.0, 1500.0)


# ---------------------------------------------------------------------------------------------- item 6
def reference(demo, layer, window, *runs, obj=1):
    """Labels from the engine: one tracker, run once per prompt set in ``runs`` (as the widget does
    for a propagation and then a correction)."""
    out = np.zeros(layer.data.shape, np.uint32)
    source = open_image(layer.data, axes="zyx")
    tracker = propagation_tracker(demo, source, axis="z", window=window)
    for prompts in runs:
        propagate(
            demo, source, RecordingWriter(out), obj, axis="z", prompts=prompts, window=window, tracker=tracker
        )
    return out


def test_correction_click_repropagates_only_its_range(make_napari_viewer, qtbot, demo, truth):
    viewer, layer = sample_viewer(make_napari_viewer)
    _, widget = open_widget(viewer, qtbot, demo)
    obj = largest(truth)
    z, r, c = nucleus_centre(truth, obj)
    z0 = z - 4
    rows, cols = np.nonzero(truth[z0] == obj)
    r0, c0 = float(np.median(rows)), float(np.median(cols))
    widget.live_check.setChecked(False)
    viewer.dims.set_current_step(0, z0)
    click(viewer, layer.data_to_world((z0, r0, c0)))
    key(viewer, Qt.Key.Key_F, Qt.KeyboardModifier.ShiftModifier)  # Shift-F: the whole stack
    labels = viewer.layers[f"{layer.name} SAM2 labels"]
    assert sorted(widget.last_report.frames) == list(range(32))
    first = labels.data.copy()

    widget.live_check.setChecked(True)  # live: a click on a propagated slice re-propagates its range
    viewer.dims.set_current_step(0, z)
    click(viewer, layer.data_to_world((z, r, c)))
    owned = list(range((z0 + z) // 2 + 1, 32))  # the slices nearer to z than to z0
    assert sorted(widget.last_report.frames) == owned
    np.testing.assert_array_equal(labels.data[: owned[0]], first[: owned[0]])
    points = widget.points_layer
    prompts = {
        round(p[0]): Prompt([p[1:]], [1])
        for p in (layer.world_to_data(points.data_to_world(q)) for q in points.data)
    }
    assert sorted(prompts) == [z0, z]
    runs = ({z0: prompts[z0]}, prompts)  # the correction is conditioned on what was propagated before
    np.testing.assert_array_equal(labels.data, reference(demo, layer, widget.data.window(layer), *runs))

    widget.live_check.setChecked(False)  # without live mode: the click segments, Shift-F the range
    click(viewer, layer.data_to_world((z, r + 2, c + 2)))
    key(viewer, Qt.Key.Key_F, Qt.KeyboardModifier.ShiftModifier)
    assert sorted(widget.last_report.frames) == owned


def test_second_shift_f_during_a_run_is_ignored_with_a_message(make_napari_viewer, qtbot, demo, truth):
    viewer, layer = sample_viewer(make_napari_viewer)
    _, widget = open_widget(viewer, qtbot, demo, threaded=True)
    z, r, c = nucleus_centre(truth, largest(truth))
    widget.live_check.setChecked(False)
    viewer.dims.set_current_step(0, z)
    click(viewer, layer.data_to_world((z, r, c)))
    started = []
    widget.runner.started.connect(started.append)
    n = len(notification_manager.records)
    key(viewer, Qt.Key.Key_F, Qt.KeyboardModifier.ShiftModifier)
    assert widget.runner.busy
    key(viewer, Qt.Key.Key_F, Qt.KeyboardModifier.ShiftModifier)
    assert any("already running: this request is ignored" in m for m in messages_since(n))
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    QApplication.processEvents()
    assert started == ["propagate"] and sorted(widget.last_report.frames) == list(range(32))


# ---------------------------------------------------------------------------------------------- item 7
def run_until_frames(widget, qtbot, frames, action):
    """Start a propagation; at its ``frames``-th frame call ``action()``; wait until it stops."""

    def on_progress(done, total, label):
        if label == "propagate" and done == frames:
            action()

    widget.runner.progressed.connect(on_progress)
    widget.propagate()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=120_000)
    QApplication.processEvents()


def assert_whole_frames(data, full):
    """Every written plane is complete (as in the full run); returns (written, never written)."""
    written = [z for z in range(len(data)) if data[z].any()]
    for z in written:
        np.testing.assert_array_equal(data[z], full[z])
    return written, [z for z in range(len(data)) if full[z].any() and not data[z].any()]


@pytest.mark.parametrize("how", ["switch image", "delete labels", "delete image", "close dock"])
def test_leaving_a_task_cancels_it_cleanly(make_napari_viewer, qtbot, demo, truth, how):
    viewer, layer = sample_viewer(make_napari_viewer)
    other = viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="other")
    viewer.layers.selection.active = layer
    dock, widget = open_widget(viewer, qtbot, demo, threaded=True)
    widget.image_combo.setCurrentText(layer.name)
    z, r, c = nucleus_centre(truth, largest(truth))
    widget.live_check.setChecked(False)
    viewer.dims.set_current_step(0, z)
    widget.add_click(layer.data_to_world((z, r, c)))
    labels = widget.labels_layer()
    data = labels.data
    actions = {
        "switch image": lambda: widget.image_combo.setCurrentText(other.name),
        "delete labels": lambda: viewer.layers.remove(labels),
        "delete image": lambda: viewer.layers.remove(layer),
        "close dock": lambda: viewer.window.remove_dock_widget(dock),
    }
    window = widget.data.window(layer)
    n = len(notification_manager.records)
    run_until_frames(widget, qtbot, 3, actions[how])
    full = reference(demo, layer, window, {z: Prompt([(r, c)], [1])})
    written, missing = assert_whole_frames(data, full)
    assert len(written) >= 3 and missing, (written, missing)  # it stopped part-way
    assert not widget.last_error
    if how == "close dock":
        assert widget.runner.closed
    else:
        assert widget.last_report.cancelled and len(widget.last_report.frames) < 32
        assert any("cancelled" in m for m in messages_since(n))


CLOSE_SCRIPT = """
import sys
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
from napari_sam2.api.session import RecordingWriter, propagate, propagation_tracker
from napari_sam2.engine import Prompt, load_model, open_image

viewer = napari.Viewer(show=True)
_dock, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM2 segmentation")
[layer] = viewer.open_sample("napari-sam2", "nuclei_3d")
demo = load_model("demo", device="cpu")
widget.set_model(demo, "demo")
widget.runner.threaded = True
widget.live_check.setChecked(False)
z, r, c = 16, 128.0, 128.0
viewer.dims.set_current_step(0, z)
widget.add_click(layer.data_to_world((z, r, c)))
window = widget.data.window(layer)
closed = []

def on_progress(done, total, label):
    if done == 3 and not closed:
        closed.append(done)
        viewer.close()  # as File > Close Window while the propagation runs

widget.runner.progressed.connect(on_progress)
widget.propagate()
data = viewer.layers[layer.name + " SAM2 labels"].data
while not closed:
    QApplication.processEvents()
for _ in range(200):
    QApplication.processEvents()
full = np.zeros(data.shape, np.uint32)
propagate(demo, open_image(layer.data, axes="zyx"), RecordingWriter(full), 1, axis="z",
          prompts={z: Prompt([(r, c)], [1])}, window=window)
written = [i for i in range(len(data)) if data[i].any()]
for i in written:
    assert np.array_equal(data[i], full[i]), i
missing = [i for i in range(len(data)) if full[i].any() and not data[i].any()]
assert len(written) >= 3 and missing, (written, missing)
print("ok", len(written))
"""


def test_closing_napari_during_a_propagation_exits_cleanly(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [sys.executable, "-c", CLOSE_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().splitlines()[-1].startswith("ok")
    assert "Aborted" not in run.stderr and "Traceback" not in run.stderr, run.stderr
    assert "has been deleted" not in run.stderr, run.stderr


def test_a_deferred_marker_fit_after_napari_deleted_the_widget_is_a_no_op(make_napari_viewer, qtbot):
    """Showing the dock queues a marker fit for the next event-loop turn; if napari closes first and
    its Qt objects are gone, that fit must do nothing (it once raised "wrapped C/C++ object of type
    QComboBox has been deleted" and aborted napari's exit during a propagation)."""
    from qtpy import sip
    from qtpy.QtGui import QShowEvent

    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "nuclei_3d")
    _dock, widget = open_widget(viewer, qtbot)
    combo = widget.data.image_combo
    widget.showEvent(QShowEvent())  # queues the fit
    sip.delete(combo)  # as napari's close deletes the widgets before the queued call runs
    with pytest.raises(RuntimeError, match="has been deleted"):
        widget.prompts.fit_markers()  # what the queued call meets now
    QApplication.processEvents()  # the queued fit runs: an exception here fails the test (pytest-qt)
    assert not widget._closed


# ---------------------------------------------------------------------------------------------- item 8
def contrast(fg, bg):
    def lum(h):
        c = [int(h.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        c = [v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4 for v in c]
        return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2]

    hi, lo = sorted((lum(fg), lum(bg)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def test_dock_fits_a_laptop_screen_with_tooltips_and_legible_polarity(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1366, 768)
    viewer.open_sample(PLUGIN, "nuclei_3d")
    dock, widget = open_widget(viewer, qtbot)
    widget.show_advanced(True)
    QApplication.processEvents()
    window = viewer.window._qt_window
    assert window.height() <= 768 and window.minimumSizeHint().height() <= 768
    assert dock.geometry().bottom() <= window.height() and dock.width() <= 450
    controls = widget.findChildren((QAbstractButton, QComboBox, QAbstractSpinBox))
    assert len(controls) >= 20
    missing = [c.text() if hasattr(c, "text") else type(c).__name__ for c in controls if not c.toolTip()]
    assert not missing, missing
    for positive in (True, False):
        widget.prompt_panel.show_polarity(positive)
        fg, bg = POLARITY_STYLE[positive]
        style = widget.polarity_button.styleSheet()
        assert f"color: {fg}" in style and f"background-color: {bg}" in style
        assert contrast(fg, bg) >= 4.5


def test_long_errors_are_one_line_with_details(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.open_sample(PLUGIN, "nuclei_3d")
    dock, widget = open_widget(viewer, qtbot)
    width = dock.width()
    urls = "\n".join(f"  https://example.org/mirror/{i}/sam2.1_hiera_tiny.pt: offline" for i in range(13))
    err = WeightsUnavailableError(f"Cannot download sam2.1_hiera_tiny; tried:\n{urls}")
    widget.tasks.error("Load model", err)
    QApplication.processEvents()
    line = widget.status_label.text()
    assert (
        "\n" not in line
        and len(line) <= STATUS_CHARS
        and line.startswith("Load model failed: Cannot download")
    )
    assert widget.tasks.details_button.isVisible() and widget.tasks.details == widget.last_error
    assert "mirror/12/" in widget.last_error
    box = widget.tasks.show_details()
    assert box.text() == widget.last_error
    box.close()
    QApplication.processEvents()
    assert dock.width() == width
    widget.tasks.status("object 1: 20 pixels")
    assert not widget.tasks.details_button.isVisible()


def test_demo_model_on_other_data_says_once_what_it_is(make_napari_viewer, qtbot, demo):
    viewer = make_napari_viewer(show=True)
    [(data, meta, _)] = sample_nuclei_3d()
    sample = viewer.add_image(data, **meta)
    _, widget = open_widget(viewer, qtbot, demo)
    n = len(notification_manager.records)
    viewer.dims.set_current_step(0, 16)
    click(viewer, sample.data_to_world((16, 128, 128)))
    assert DEMO_NOTICE not in messages_since(n)  # the sample is what the demo model is for
    image, _inside = sparse_nuclei()
    other = viewer.add_image(image, name="mine")
    widget.image_combo.setCurrentText(other.name)
    widget.labels_combo.setCurrentText("(new labels layer)")
    for rc in ((80, 90), (30, 40)):
        viewer.dims.set_current_step(0, 8)
        widget.add_click(other.data_to_world((8, *rc)))
    notices = [m for m in messages_since(n) if m == DEMO_NOTICE]
    assert len(notices) == 1 and "official model" in notices[0]
