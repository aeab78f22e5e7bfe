"""The napari widget, driven as a user drives it (clicks in the prompts layer, buttons = methods).

Segmentation uses the deterministic flood-fill backend (tests/flood_backend.py), propagation a
small random-weight SAM2 (as tests/test_propagation.py): these tests check what is written where
(labels, undo, cancel, coordinates, notifications); segmentation quality with the demo model is
in tests/test_plugin_demo.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
import torch
from napari.utils.notifications import notification_manager
from qtpy.QtWidgets import QApplication
from scipy import ndimage

from flood_backend import BatchedFlood, FloodFillBackend
from helpers import auto_mask, iou, make_model, make_volume, save_tiny, write_tiff
from napari_sam2.engine import FrameSequence, LabelWriter, Prompt, Tracker
from napari_sam2.engine.provenance import read_labels
from napari_sam2.plugin import console
from napari_sam2.plugin._layers import image_geometry, to_image_coords
from napari_sam2.plugin._prompts import NEGATIVE_COLOR, rgba
from napari_sam2.plugin._sample import sample_nuclei_3d
from napari_sam2.plugin._session import Session, Step, StepKind
from napari_sam2.plugin._widget import Sam2Widget
from napari_sam2.training import synthetic


def clean(stack):
    """Bright objects on a dark background: the flood backend then finds each object exactly."""
    image = np.where(stack.labels > 0, 30000, 1000).astype(np.uint16)
    return synthetic.SyntheticStack(image, stack.labels, stack.axes, stack.scale)


@pytest.fixture(scope="module")
def stack():
    return clean(
        synthetic.nuclei_3d((12, 128, 128), 4, seed=7, radius=(10.0, 14.0), z_scale=4.0, touching=0.0)
    )


@pytest.fixture(scope="module")
def small():
    return synthetic.nuclei_3d((8, 64, 64), 2, seed=3, radius=(6.0, 8.0), z_scale=4.0)


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def make_widget(viewer, qtbot, model=None, threaded=False):
    widget = Sam2Widget(viewer, threaded=threaded)
    qtbot.addWidget(widget)
    widget.set_model(model if model is not None else FloodFillBackend(128))
    return widget


def centre(labels_plane, obj):
    rows, cols = np.nonzero(labels_plane == obj)
    return float(np.median(rows)), float(np.median(cols))


def largest(stack, z):
    ids, counts = np.unique(stack.labels[z][stack.labels[z] > 0], return_counts=True)
    return int(ids[np.argmax(counts)])


def errors_since(n):
    return [str(r.message) for r in notification_manager.records[n:]]


def test_click_segments_the_object_on_the_current_slice_only(viewer, qtbot, stack):
    viewer.add_image(stack.image, name="img")
    widget = make_widget(viewer, qtbot)
    z = 6
    obj = largest(stack, z)
    viewer.dims.set_current_step(0, z)
    widget.add_click((z, *centre(stack.labels[z], obj)))  # live mode: the click segments
    labels = viewer.layers["img SAM2 labels"]
    # uint16: napari draws it without converting the plane (uint32 is hashed on every redraw)
    assert labels.data.shape == stack.image.shape and labels.data.dtype == np.uint16
    assert iou(labels.data[z] == 1, stack.labels[z] == obj) > 0.8
    assert not np.delete(labels.data, z, axis=0).any()  # no other slice written
    assert set(np.unique(labels.data)) == {0, 1}


def test_object_ids_past_uint16_widen_the_new_labels_layer(viewer, qtbot, stack):
    viewer.add_image(stack.image, name="img")
    widget = make_widget(viewer, qtbot)
    z = 6
    obj = largest(stack, z)
    viewer.dims.set_current_step(0, z)
    widget.add_click((z, *centre(stack.labels[z], obj)))
    labels = viewer.layers["img SAM2 labels"]
    first = labels.data.copy()
    assert labels.data.dtype == np.uint16
    n = len(notification_manager.records)
    widget.next_object()
    widget.object_spin.setValue(70_000)  # as a user types it
    other = next(o for o in np.unique(stack.labels[z]) if o not in (0, obj))
    widget.add_click((z, *centre(stack.labels[z], other)))
    assert labels.data.dtype == np.uint32  # widened, not refused
    assert widget.last_error == ""
    assert any("widened from uint16 to uint32 to hold object id 70000" in m for m in errors_since(n))
    np.testing.assert_array_equal(labels.data == 1, first == 1)  # the first object kept
    assert iou(labels.data[z] == 70_000, stack.labels[z] == other) > 0.8
    widget.undo()
    np.testing.assert_array_equal(labels.data, first)
    while widget.session.undo_stack:  # the earlier uint16 steps still undo through the wider layer
        widget.undo()
    assert not labels.data.any() and widget.last_error == ""


def test_a_click_that_finds_nothing_says_so_and_keeps_the_slice(viewer, qtbot, stack):
    viewer.add_image(stack.image, name="img")
    widget = make_widget(viewer, qtbot)
    z = 6
    labels = widget.labels_layer()
    background = np.argwhere(ndimage.binary_erosion(stack.labels[z] == 0, iterations=12))[0]
    labels.data[z, :10, :10] = 1  # object 1's own pixels on this slice, e.g. painted
    before = labels.data.copy()
    viewer.dims.set_current_step(0, z)
    widget.add_click((z, *background))  # the flood backend finds no bright region there
    assert np.array_equal(labels.data, before)
    said = f"object 1 at z={z}: the model found no object at the click; try a box, more clicks or an official model"
    assert widget.status_label.text().startswith(
        said[:60]
    )  # the status line is shortened, the whole under Details
    assert (widget.tasks.details or widget.status_label.text()) == said
    obj = largest(stack, z)
    widget.add_click((z, *centre(stack.labels[z], obj)))  # a click on a nucleus still segments it
    assert iou(labels.data[z] == 1, stack.labels[z] == obj) > 0.8


def test_negative_click_polarity_and_colours(viewer, qtbot, stack):
    viewer.add_image(stack.image, name="img")
    widget = make_widget(viewer, qtbot)
    z = 6
    obj = largest(stack, z)
    viewer.dims.set_current_step(0, z)
    r, c = centre(stack.labels[z], obj)
    widget.add_click((z, r, c))
    assert (viewer.layers["img SAM2 labels"].data[z] == 1).sum() > 100
    assert widget.toggle_polarity() is False
    widget.add_click((z, r + 1, c + 1))  # the flood backend removes the region of a negative click
    points = widget.points_layer
    assert list(points.features["positive"]) == [True, False]
    np.testing.assert_allclose(points.face_color[1], rgba(NEGATIVE_COLOR))
    assert not (viewer.layers["img SAM2 labels"].data[z] == 1).any()


def test_box_prompt_segments_inside_the_box(viewer, qtbot, stack):
    viewer.add_image(stack.image, name="img")
    widget = make_widget(viewer, qtbot)
    z = 6
    obj = largest(stack, z)
    viewer.dims.set_current_step(0, z)
    rows, cols = np.nonzero(stack.labels[z] == obj)
    widget.add_box([(z, rows.min() - 2, cols.min() - 2), (z, rows.max() + 2, cols.max() + 2)])
    written = viewer.layers["img SAM2 labels"].data[z] == 1
    assert iou(written, stack.labels[z] == obj) > 0.7
    assert written[rows.min() - 3 :].any() and not written[: rows.min() - 3].any()


def test_segment_without_prompt_is_a_notification_with_a_next_step(viewer, qtbot, stack):
    viewer.add_image(stack.image, name="img")
    widget = make_widget(viewer, qtbot)
    n = len(notification_manager.records)
    widget.segment()
    assert any(
        "has no positive click or box on this slice: click on the object" in m for m in errors_since(n)
    )
    widget.propagate(axis="t")  # a z-stack has no t axis
    assert "propagation needs a z or t axis" in widget.last_error
    viewer.dims.set_current_step(0, 6)
    widget.add_click((6, *centre(stack.labels[6], largest(stack, 6))))
    widget.propagate(axis="z")  # the flood backend cannot track
    assert "propagation needs a SAM2 model" in widget.last_error
    assert any("load 'demo'" in m for m in errors_since(n))


def test_wrong_labels_layer_is_refused(viewer, qtbot, stack):
    viewer.add_image(stack.image, name="img")
    viewer.add_labels(np.zeros((3, 10, 10), np.uint8), name="small")
    widget = make_widget(viewer, qtbot)
    widget.labels_combo.setCurrentText("small")
    viewer.dims.set_current_step(0, 6)
    widget.add_click((6, 64, 64))
    assert "has shape (3, 10, 10) but the image's level 0 is (12, 128, 128)" in widget.last_error
    assert not viewer.layers["small"].data.any()


def test_other_objects_are_never_overwritten_unless_asked(viewer, qtbot, stack):
    viewer.add_image(stack.image, name="img")
    existing = np.zeros(stack.image.shape, np.uint32)
    z = 6
    obj = largest(stack, z)
    truth = stack.labels[z] == obj
    rows, _cols = np.nonzero(truth)
    existing[z, : int(np.median(rows))] = 5  # another object covers the top half of ours
    viewer.add_labels(existing.copy(), name="mine")
    widget = make_widget(viewer, qtbot)
    widget.labels_combo.setCurrentText("mine")
    viewer.dims.set_current_step(0, z)
    widget.add_click((z, *centre(stack.labels[z], obj)))
    data = viewer.layers["mine"].data
    assert (data[existing == 5] == 5).all()
    assert ((data[z] == 1) == (truth & (existing[z] == 0))).mean() > 0.98

    widget.next_object()
    assert widget.session.object_id == 6  # the next free id after the labels' 5
    widget.overwrite_check.setChecked(True)
    widget.add_click((z, *centre(stack.labels[z], obj)))
    assert (data[z][truth] == 6).mean() > 0.8  # now it takes id 5's voxels


def test_undo_redo_over_clicks_next_object_and_propagation(viewer, qtbot, small):
    viewer.add_image(small.image, name="img")
    widget = make_widget(viewer, qtbot, model=make_model())
    z = 4
    viewer.dims.set_current_step(0, z)
    widget.add_click((z, 20, 20))
    after_click = viewer.layers["img SAM2 labels"].data.copy()
    widget.propagate()
    after_propagation = viewer.layers["img SAM2 labels"].data.copy()
    widget.next_object()
    widget.add_click((z, 40, 40))
    after_second = viewer.layers["img SAM2 labels"].data.copy()
    labels = viewer.layers["img SAM2 labels"]
    assert widget.session.object_id == 2 and len(widget.session.undo_stack) == 4

    states = [after_second, after_propagation, after_propagation, after_click, np.zeros_like(after_click)]
    n_points = [1, 0, 1, 1, 0]  # object 1's click leaves the layer with "next object"
    for state, n in zip(states[1:], n_points[1:]):
        widget.undo()
        np.testing.assert_array_equal(labels.data, state)
        assert len(widget.points_layer.data) == n
    assert widget.session.object_id == 1
    for state, n in zip(reversed(states[:-1]), reversed(n_points[:-1])):
        widget.redo()
        np.testing.assert_array_equal(labels.data, state)
        assert len(widget.points_layer.data) == n
    assert widget.session.object_id == 2


def test_undo_refuses_when_the_plane_was_painted_since(viewer, qtbot, stack):
    viewer.add_image(stack.image, name="img")
    widget = make_widget(viewer, qtbot)
    viewer.dims.set_current_step(0, 6)
    widget.add_click((6, *centre(stack.labels[6], largest(stack, 6))))
    labels = viewer.layers["img SAM2 labels"]
    rows, cols = np.nonzero(labels.data[6] == 1)
    assert len(rows) > 20
    labels.data[6, rows[0], cols[0]] = 9  # the user paints over the segmented object
    painted = labels.data.copy()
    widget.undo()
    assert "changed since" in widget.last_error
    np.testing.assert_array_equal(labels.data, painted)


def test_undo_keeps_painting_outside_the_edited_box(viewer, qtbot, stack):
    viewer.add_image(stack.image, name="img")
    widget = make_widget(viewer, qtbot)
    viewer.dims.set_current_step(0, 6)
    widget.add_click((6, *centre(stack.labels[6], largest(stack, 6))))
    labels = viewer.layers["img SAM2 labels"]
    (edit,) = widget.session.undo_stack[-1].edits
    r0, c0, r1, c1 = edit.box
    assert edit.changed == np.count_nonzero(labels.data[6] == 1) and edit.after.shape == (r1 - r0, c1 - c0)
    assert edit.nbytes < labels.data[6].nbytes / 10  # a box around the object, not the plane
    assert (r0, c0) != (0, 0)
    labels.data[6, 0, 0] = 9  # the user paints elsewhere on the plane
    widget.undo()
    assert widget.last_error == ""
    assert labels.data[6, 0, 0] == 9  # the paint stays ...
    assert np.count_nonzero(labels.data) == 1  # ... and the object goes


def reference_run(model, image, window, z, rc, obj=1):
    seq = FrameSequence(image, axis="z", window=window, image_size=model.config.image_size)
    tracker = Tracker(model, seq, len(seq), seq.frame_hw)
    tracker.add_prompt(z, obj, Prompt([rc], [1]))
    out = np.zeros(image.shape, np.uint32)
    tracker.run(LabelWriter(out))
    return out


def test_propagate_writes_every_slice_as_the_engine_does(viewer, qtbot, small):
    layer = viewer.add_image(small.image, name="img")
    model = make_model()
    widget = make_widget(viewer, qtbot, model=model)
    z = 4
    viewer.dims.set_current_step(0, z)
    widget.live_check.setChecked(False)
    widget.add_click((z, 20.0, 30.0))
    widget.propagate()
    expected = reference_run(model, small.image, widget.data.window(layer), z, (20.0, 30.0))
    assert expected.any()
    np.testing.assert_array_equal(viewer.layers["img SAM2 labels"].data, expected)
    assert sorted(widget.last_report.frames) == list(range(8))


@pytest.mark.parametrize("threaded", [False, True])
def test_cancel_mid_propagation_leaves_no_half_written_frame(viewer, qtbot, small, threaded):
    layer = viewer.add_image(small.image, name="img")
    model = make_model()
    widget = make_widget(viewer, qtbot, model=model, threaded=threaded)
    z = 0
    viewer.dims.set_current_step(0, z)
    widget.live_check.setChecked(False)
    widget.add_click((z, 20.0, 30.0))

    def cancel_after_three(done, total, label):
        if label == "propagate" and done == 3:
            widget.cancel()

    widget.runner.progressed.connect(cancel_after_three)
    widget.propagate()
    qtbot.waitUntil(lambda: not widget.runner.busy, timeout=60_000)
    report = widget.last_report
    assert report.cancelled and 3 <= len(report.frames) < 8
    full = reference_run(model, small.image, widget.data.window(layer), z, (20.0, 30.0))
    data = viewer.layers["img SAM2 labels"].data
    for f in range(8):  # every frame is either whole (as in the full run) or untouched
        np.testing.assert_array_equal(data[f], full[f] if f in report.frames else 0)
    widget.undo()  # the partial run is one undo step
    assert not data.any()


def test_threaded_and_synchronous_give_the_same_labels(make_napari_viewer, qtbot, stack):
    results = []
    for threaded in (False, True):
        viewer = make_napari_viewer()
        viewer.add_image(stack.image, name="img")
        widget = make_widget(viewer, qtbot, threaded=threaded)
        viewer.dims.set_current_step(0, 6)
        widget.add_click((6, *centre(stack.labels[6], largest(stack, 6))))
        qtbot.waitUntil(lambda w=widget: not w.runner.busy, timeout=30_000)
        results.append(viewer.layers["img SAM2 labels"].data.copy())
    assert results[0][6].any()
    np.testing.assert_array_equal(results[0], results[1])


def test_scale_and_translate_map_clicks_to_image_pixels(viewer, qtbot, stack):
    scale, translate = (2.0, 0.5, 0.75), (10.0, -4.0, 3.0)
    viewer.add_image(stack.image, name="img", scale=scale, translate=translate)
    widget = make_widget(viewer, qtbot)
    z = 6
    obj = largest(stack, z)
    r, c = centre(stack.labels[z], obj)
    world = np.array([z, r, c]) * scale + translate
    viewer.dims.set_point(0, world[0])
    assert widget.current_frame() == (z,)
    widget.add_click(world)
    labels = viewer.layers["img SAM2 labels"]
    assert tuple(labels.scale) == scale and tuple(labels.translate) == translate
    assert iou(labels.data[z] == 1, stack.labels[z] == obj) > 0.8

    # a points layer with its own transform: the same world point gives the same image pixel
    other = viewer.add_points(ndim=3, scale=(1.0, 1.0, 1.0), translate=(0.0, 0.0, 0.0))
    np.testing.assert_allclose(to_image_coords(world[None], other, viewer.layers["img"]), [[z, r, c]])


def test_multiscale_dask_image_segments_level_zero(viewer, qtbot, stack):
    level0 = da.from_array(stack.image, chunks=(1, 64, 64))
    viewer.add_image([level0, level0[:, ::2, ::2]], name="img", multiscale=True, contrast_limits=(0, 40000))
    widget = make_widget(viewer, qtbot)
    z = 6
    obj = largest(stack, z)
    viewer.dims.set_current_step(0, z)
    widget.add_click((z, *centre(stack.labels[z], obj)))
    labels = viewer.layers["img SAM2 labels"]
    assert labels.data.shape == stack.image.shape  # level 0, not the coarse level
    assert iou(labels.data[z] == 1, stack.labels[z] == obj) > 0.8


def test_dims_2d_time_and_4d(viewer, qtbot):
    image2d = clean(synthetic.nuclei_2d((128, 128), 3, seed=1, touching=0.0))
    viewer.add_image(image2d.image, name="plane")
    widget = make_widget(viewer, qtbot)
    obj = int(np.unique(image2d.labels)[1])
    widget.add_click(centre(image2d.labels, obj))
    labels = viewer.layers["plane SAM2 labels"]
    assert labels.data.shape == (128, 128) and iou(labels.data == 1, image2d.labels == obj) > 0.8
    assert widget.axis_combo.count() == 0

    layer = viewer.add_image(np.zeros((5, 32, 32), np.uint8), name="movie")
    viewer.dims.axis_labels = ("t", "y", "x")
    assert image_geometry(layer, viewer.dims.axis_labels).axes == "tyx"
    widget.image_combo.setCurrentText("movie")
    widget.stack_axis_combo.setCurrentText("t")
    assert widget.geometry().axes == "tyx" and widget.axis_combo.currentText() == "t"

    layer4 = viewer.add_image(np.zeros((3, 4, 32, 32), np.uint8), name="tz")
    widget.image_combo.setCurrentText("tz")
    viewer.dims.set_current_step(0, 2)
    viewer.dims.set_current_step(1, 3)
    assert image_geometry(layer4).axes == "tzyx" and widget.current_frame() == (2, 3)
    assert [widget.axis_combo.itemText(i) for i in range(widget.axis_combo.count())] == ["t", "z", "z+t"]


def test_sample_data_and_manifest_widget(viewer, qtbot):
    [(data, meta, kind)] = sample_nuclei_3d()
    assert kind == "image" and data.shape == (32, 256, 256) and data.dtype == np.uint16
    assert meta["scale"] == (2.0, 1.0, 1.0)
    np.testing.assert_array_equal(data, synthetic.sample_nuclei_3d().image)
    layers = viewer.open_sample("napari-sam2", "nuclei_3d")
    assert layers[0].data.shape == (32, 256, 256)
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM2 segmentation")
    assert isinstance(widget, Sam2Widget) and widget.image_layer.name == layers[0].name


def test_console_functions_on_arrays_and_layers(viewer, stack):
    z = 6
    obj = largest(stack, z)
    rc = centre(stack.labels[z], obj)
    out = console.segment(stack.image, [(z, *rc)], model=FloodFillBackend(128))
    assert out.shape == stack.image.shape and iou(out[z] == 1, stack.labels[z] == obj) > 0.8

    image = viewer.add_image(stack.image, name="img", scale=(2.0, 1.0, 1.0))
    points = viewer.add_points([(2 * z, *rc)], name="clicks")  # world coordinates, unscaled layer
    labels = viewer.add_labels(np.zeros(stack.image.shape, np.uint16), name="out", scale=(2.0, 1.0, 1.0))
    console.segment(image, points, labels=labels, model=FloodFillBackend(128), object_id=3)
    assert iou(labels.data[z] == 3, stack.labels[z] == obj) > 0.8
    mask = np.zeros((128, 128), bool)
    mask[:10, :10] = True
    assert console.write(labels, mask, object_id=4, index=(0,)) == 100


def test_console_propagate_matches_the_engine(small):
    model = make_model()
    out = console.propagate(small.image, [(4, 20.0, 30.0)], model=model)
    window = None  # arrays use robust percentiles, as the engine's default
    expected = reference_run(model, small.image, window, 4, (20.0, 30.0))
    np.testing.assert_array_equal(out, expected)
    seeded = console.propagate(
        small.image, labels=np.where(expected == 1, 7, 0).astype(np.uint32), model=model, object_id=7
    )
    assert (seeded == 7).sum(axis=(1, 2)).astype(bool).sum() >= 1


def test_segment_everything_adds_new_objects_on_the_slice_as_one_undo_step(viewer, qtbot, stack):
    viewer.add_image(stack.image, name="img")
    existing = np.zeros(stack.image.shape, np.uint32)
    existing[0, :4, :4] = 5  # earlier work on another slice: new ids start above it
    existing[6, :3, :3] = 2  # and one on this slice, which is kept
    viewer.add_labels(existing.copy(), name="mine")
    widget = make_widget(viewer, qtbot, model=BatchedFlood(128))  # deterministic: bright regions
    widget.labels_combo.setCurrentText("mine")
    z = 6
    viewer.dims.set_current_step(0, z)
    widget.segment_everything(points_per_side=16, stability_score_thresh=0.8)
    data = viewer.layers["mine"].data
    truth = stack.labels[z]
    n = len(np.unique(truth[truth > 0]))
    assert n >= 2
    assert sorted(np.unique(data[z][data[z] > 2]).tolist()) == list(range(6, 6 + n))
    assert sorted(widget.last_report.objects) == list(range(6, 6 + n))
    found = set()
    for obj in np.unique(truth[truth > 0]):  # each nucleus is one new object (edges at 1/4 resolution)
        ids, counts = np.unique(data[z][truth == obj], return_counts=True)
        best = int(ids[np.argmax(counts)])
        assert best >= 6 and iou(data[z] == best, truth == obj) > 0.8, (obj, ids, counts)
        found.add(best)
    assert len(found) == n
    assert (data[z, :3, :3] == 2).all()
    np.testing.assert_array_equal(np.delete(data, z, axis=0), np.delete(existing, z, axis=0))
    assert widget.session.object_id == 6 + n  # the next click starts a new object
    widget.undo()
    np.testing.assert_array_equal(data, existing)
    assert widget.session.object_id == 1
    widget.redo()
    assert sorted(np.unique(data[z][data[z] > 2]).tolist()) == list(range(6, 6 + n))

    image2d = clean(synthetic.nuclei_2d((128, 128), 3, seed=1, touching=0.0))
    viewer.add_image(image2d.image, name="plane")
    widget.image_combo.setCurrentText("plane")
    widget.labels_combo.setCurrentText("(new labels layer)")
    widget.segment_everything(points_per_side=16, stability_score_thresh=0.8)
    plane = viewer.layers["plane SAM2 labels"].data
    ids = np.unique(image2d.labels[image2d.labels > 0])
    assert sorted(np.unique(plane[plane > 0]).tolist()) == list(range(1, len(ids) + 1))
    for obj in ids:
        assert max(iou(plane == i, image2d.labels == obj) for i in range(1, len(ids) + 1)) > 0.8


def test_segment_everything_through_the_stack_tracks_seeded_objects(viewer, qtbot, small, monkeypatch):
    """The engine's stack mode with a stand-in generator (as in test_automask): a random SAM2 whose
    object score says 'absent' leaves exactly the seeded object on its seed frame."""
    import napari_sam2.engine.automask as am

    def fake_generate(predictor, source, *, frame, **kwargs):
        return [auto_mask((5, 5, 20, 20), (64, 64))]

    monkeypatch.setattr(am, "generate_masks", fake_generate)
    viewer.add_image(small.image, name="img")
    widget = make_widget(viewer, qtbot, model=make_model(score_bias=-20.0))
    viewer.dims.set_current_step(0, 2)
    widget.segment_everything(whole_stack=True, seed_frames=[4])
    data = viewer.layers["img SAM2 labels"].data
    assert widget.last_report.objects == {1: 4} and not widget.last_report.cancelled
    assert iou(data[4] == 1, auto_mask((5, 5, 20, 20), (64, 64)).full((64, 64))) >= 0.85
    assert not np.delete(data, 4, axis=0).any()
    assert widget.session.object_id == 2
    widget.undo()
    assert not data.any()


def run_script(script, tmp_path, name):
    path = tmp_path / f"{name}.py"
    path.write_text(script)
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    out = tmp_path / f"{name}.tif"
    run = subprocess.run(
        [sys.executable, str(path), str(out)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    return read_labels(out)


def test_copy_as_python_reproduces_the_widgets_labels_in_a_new_process(
    make_napari_viewer, qtbot, tmp_path, monkeypatch
):
    path = write_tiff(tmp_path / "vol.tif", make_volume(planes=4))
    ckpt = save_tiny(tmp_path)  # a random-weight SAM2 as a checkpoint file
    results = {}
    for case in ("segment", "propagate"):
        viewer = make_napari_viewer()
        [layer] = viewer.open(str(path), plugin="napari")
        widget = Sam2Widget(viewer, threaded=False)
        qtbot.addWidget(widget)
        widget.load_model(str(ckpt), device="cpu")
        viewer.dims.set_current_step(0, 1)
        widget.add_click((1, 30.0, 35.0))
        widget.add_click((1, 50.0, 10.0), positive=False)
        if case == "segment":
            widget.next_object()
            viewer.dims.set_current_step(0, 2)
            widget.add_box([(2, 5.0, 5.0), (2, 15.0, 20.0)])
        else:
            widget.propagate(axis="z")
        labels = viewer.layers[f"{layer.name} SAM2 labels"].data
        assert widget.copy_as_python() == QApplication.clipboard().text()
        script = QApplication.clipboard().text()
        assert f"{case}(" in script and str(ckpt.resolve()) in script
        steps = widget.provenance_record().extra["steps"]
        assert steps[-1]["kind"] == ("segment" if case == "segment" else "propagate")
        with monkeypatch.context() as m:  # the script reads typed steps, never their wording
            m.setattr(Step, "description", property(lambda step: "reworded: object 9 along q"))
            reworded = widget.copy_as_python()
            widget.undo()
            assert widget.status_label.text() == "Undo: reworded: object 9 along q"
            widget.redo()
        assert reworded == script
        again = run_script(reworded, tmp_path, case)
        # the script's labels are the API's uint32, the widget's layer uint16: the same values
        assert again.dtype == np.uint32 and labels.dtype == np.uint16 and labels.any()
        np.testing.assert_array_equal(again, labels)
        results[case] = labels.copy()
    assert set(np.unique(results["segment"])) == {0, 1, 2}
    assert not np.array_equal(results["segment"], results["propagate"])


def test_steps_are_typed_and_their_description_is_derived():
    prompt = Prompt([(20.0, 30.0)], [1])
    step = Step(StepKind.PROPAGATE, 3, "tz", (1, 4), "z", {(1, 4): prompt}, (0.0, 500.0))
    assert step.description == "propagate object 3 along z"
    assert step.fixed == {"t": 1} and step.object_before == step.object_after == 3
    assert step.to_dict() == {
        "kind": "propagate",
        "object_id": 3,
        "frame": {"t": 1, "z": 4},
        "axis": "z",
        "prompt_frames": [[1, 4]],
        "window": [0.0, 500.0],
        "next_id": None,
        "options": {},
    }
    assert Step(StepKind.SEGMENT, 2, "z", (5,)).description == "segment object 2 at z=5"
    assert Step(StepKind.NEXT_OBJECT, 2, next_id=4, object_after=4).description == "next object 2 -> 4"
    assert Step(StepKind.PROPAGATE, 1, "tz", (0, 2), "z+t").fixed == {}

    session = Session(max_steps=2)  # Copy as Python sees every step still done, past the undo limit
    for obj in (1, 2, 3):
        session.record(Step(StepKind.SEGMENT, obj, "z", (obj,), prompts={(obj,): prompt}))
    assert len(session.undo_stack) == 2 and [s.object_id for s in session.done] == [1, 2, 3]
    assert session.done[0].edits == () and session.done[0].prompts == {(1,): prompt}
    session.undo(None)
    assert [s.object_id for s in session.done] == [1, 2]
    session.redo(None)
    assert [s.object_id for s in session.done] == [1, 2, 3]


def test_widget_parts_do_not_import_the_widget():
    """The widget imports its parts; they talk through small interfaces (plugin/_ports.py), so no
    module of plugin/ but the entry points that build a whole window (the console's lazy find_widget
    and the demo, ``_demo.build_demo``) names _widget."""
    import ast

    import napari_sam2.plugin as plugin

    for path in sorted(Path(plugin.__file__).parent.glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names.add(node.module or "")
                names.update(f"{node.module}.{a.name}" if node.module else a.name for a in node.names)
        uses_widget = any(n.split(".")[-1] == "_widget" for n in names)
        assert not uses_widget or path.name in {"console.py", "_demo.py"}, path.name


def test_npe2_lists_and_validates_the_plugin():
    npe2 = Path(sys.executable).parent / "npe2"
    listed = subprocess.run([str(npe2), "list"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "napari-sam2" in listed.stdout
    valid = subprocess.run(
        [str(npe2), "validate", "napari-sam2"], capture_output=True, text=True, timeout=120
    )
    assert valid.returncode == 0 and "valid" in valid.stdout, valid.stdout + valid.stderr
