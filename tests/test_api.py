"""Scripting API: the same calls on arrays, files and napari-like layers agree with the engine."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from helpers import AUTO, CLICKS, FakeLayer, make_volume
from napari_sam2 import Prompt, api, propagate, read_prompts, segment, segment_everything
from napari_sam2.engine import automask
from napari_sam2.engine.automask import AutoMaskError
from napari_sam2.engine.frames import FrameSequence
from napari_sam2.engine.labels import LabelError, LabelWriter
from napari_sam2.engine.predictor import ImagePredictor
from napari_sam2.engine.prompts import PromptError
from napari_sam2.engine.provenance import ProvenanceError
from napari_sam2.engine.tracker import Tracker


def test_segment_matches_the_image_predictor_on_arrays_files_and_layers(tiny_ckpt, vol_file):
    vol = make_volume()
    from_array = segment(vol, CLICKS, model=tiny_ckpt)
    from_file = segment(vol_file, CLICKS, model=tiny_ckpt)
    image_layer = FakeLayer(vol, scale=(2, 0.5, 0.5), translate=(0, 10, 10))
    # points given in world coordinates of a layer with unit scale: world = image * scale + translate
    points = FakeLayer(
        np.array([[2, 30 * 0.5 + 10, 35 * 0.5 + 10], [2, 50 * 0.5 + 10, 10 * 0.5 + 10]]),
        features={"label": [1, 0]},
    )
    from_layer = segment(image_layer, points, model=tiny_ckpt)

    model = api.resolve_model(tiny_ckpt, "cpu")
    pred = ImagePredictor(model)
    expected = np.zeros_like(from_array.labels)
    for (z, obj), p in sorted(CLICKS.items()):
        pred.set_image(vol, frame=z)
        expected[z][pred.predict(p).full()] = obj  # the two objects do not overlap here
    assert (expected > 0).sum() > 50 and set(np.unique(expected)) == {0, 1, 2}
    assert np.array_equal(from_array.labels, expected)
    assert np.array_equal(from_file.labels, expected)
    assert np.array_equal(from_layer.labels, np.where(expected == 1, 1, 0))
    assert (
        from_file.record.image["path"] == str(vol_file.resolve()) and from_array.record.image["path"] is None
    )


def test_prompt_forms_are_equivalent(tiny_ckpt):
    vol = make_volume()
    p = CLICKS[(1, 1)]
    ref = segment(vol, {(1, 1): p}, model=tiny_ckpt).labels
    for form in (p, [p], {1: p}):
        assert np.array_equal(segment(vol, form, frame=1, model=tiny_ckpt).labels, ref)


def test_propagate_matches_the_tracker_and_streams_to_zarr(tiny_ckpt, vol_file, tmp_path):
    steps = []
    result = propagate(vol_file, CLICKS, model=tiny_ckpt, progress=lambda d, t: steps.append((d, t)))
    assert steps[-1] == (4, 4) and [d for d, _ in steps] == [1, 2, 3, 4]

    model = api.resolve_model(tiny_ckpt, "cpu")
    seq = FrameSequence(make_volume(), axis="z", image_size=model.config.image_size)
    expected = np.zeros((4, 60, 70), np.uint32)
    tracker = Tracker(model, seq, len(seq), seq.frame_hw)
    for (z, obj), p in sorted(CLICKS.items()):
        tracker.add_prompt(z, obj, p)
    tracker.run(LabelWriter(expected))
    assert np.array_equal(result.labels, expected) and (expected == 2).any()

    streamed = propagate(vol_file, CLICKS, model=tiny_ckpt, out=tmp_path / "p.zarr")
    assert isinstance(streamed.labels, zarr.Array) and np.array_equal(streamed.labels[:], expected)
    assert streamed.path == tmp_path / "p.zarr" and not list(tmp_path.glob(".p.zarr.tmp-*"))


def test_writes_into_a_labels_layer_and_keeps_other_objects(tiny_ckpt):
    vol = make_volume()
    painted = np.zeros((4, 60, 70), np.uint16)
    painted[1, 28:32, 33:37] = 9  # the user's object inside where object 1 goes
    layer = FakeLayer(painted)
    segment(vol, {(1, 1): CLICKS[(1, 1)]}, model=tiny_ckpt, labels=layer)
    assert layer.refreshed == 1 and (painted[1, 28:32, 33:37] == 9).all() and (painted == 1).sum() > 20


def test_segment_everything_matches_the_engine_on_planes_stacks_and_layers(sharp_ckpt, tmp_path):
    vol = make_volume()
    model = api.resolve_model(sharp_ckpt, "cpu")
    steps = []
    plane = segment_everything(vol[1], model=sharp_ckpt, progress=lambda d, t: steps.append((d, t)), **AUTO)
    expected = automask.segment_everything(model, vol[1], **AUTO).labels
    assert np.array_equal(plane.labels, expected) and expected.any()
    assert steps and steps[-1][0] == steps[-1][1]
    rec = plane.record
    assert rec.kind == "auto" and rec.prompts == [] and rec.propagation is None
    assert rec.options["generator"]["points_per_side"] == 6 and rec.tiling == {"tile_size": 64, "overlap": 16}

    stack = segment_everything(
        FakeLayer(vol), model=sharp_ckpt, seed_spacing=2, out=tmp_path / "a.zarr", **AUTO
    )
    expected = automask.segment_everything(model, vol, seed_spacing=2, **AUTO)
    assert isinstance(stack.labels, zarr.Array) and np.array_equal(stack.labels[:], expected.labels)
    assert expected.labels.any() and stack.record.propagation["seed_frames"] == expected.seed_frames == [1, 3]

    painted = np.zeros((60, 70), np.uint16)
    painted[:3, :3] = 9  # the user's object: kept, and new ids start above it
    layer = FakeLayer(painted)
    segment_everything(vol[1], model=sharp_ckpt, labels=layer, **AUTO)
    assert layer.refreshed == 1 and (painted[:3, :3] == 9).all() and painted.max() > 9
    with pytest.raises(api.Cancelled, match="cancelled after 0 seed frame"):
        segment_everything(vol, model=sharp_ckpt, cancel=lambda: True, **AUTO)
    with pytest.raises(AutoMaskError, match="unknown generator option"):
        segment_everything(vol, model=sharp_ckpt, points_per_sid=4)


def test_cancel_keeps_whole_planes(tiny_ckpt):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(api.Cancelled, match="cancelled after") as err:
        propagate(make_volume(), CLICKS, model=tiny_ckpt, cancel=cancel)
    labels = err.value.labels
    written = [z for z in range(4) if labels[z].any()]
    assert written and len(written) < 4


def test_models_are_loaded_once_per_process(tiny_ckpt):
    vol = make_volume()
    segment(vol, CLICKS, model=tiny_ckpt)
    before = api.LOADS[0]
    segment(vol, CLICKS, model=str(tiny_ckpt))
    assert api.LOADS[0] == before


def test_clear_errors(tiny_ckpt, vol_file, tmp_path):
    vol = make_volume()
    with pytest.raises(PromptError, match=r"frame \[\].*frame axes 'z'"):
        segment(vol, Prompt(points=[[3, 3]], labels=[1]), model=tiny_ckpt)
    with pytest.raises(PromptError, match="outside the 60 x 70 plane"):
        segment(vol, {(0, 1): Prompt(points=[[80, 3]], labels=[1])}, model=tiny_ckpt)
    with pytest.raises(FileNotFoundError, match="image not found"):
        segment(tmp_path / "nope.tif", CLICKS, model=tiny_ckpt)
    with pytest.raises(LabelError, match="do not fit the image"):
        segment(vol, CLICKS, model=tiny_ckpt, labels=np.zeros((2, 60, 70), np.uint32))
    (tmp_path / "taken.tif").write_bytes(b"x")
    with pytest.raises(ProvenanceError, match="already exists"):
        segment(vol, CLICKS, model=tiny_ckpt, out=tmp_path / "taken.tif")
    with pytest.raises(PromptError, match="not at"):
        propagate(
            vol[None].repeat(2, 0),
            {(0, 1, 1): CLICKS[(1, 1)], (1, 2, 2): CLICKS[(2, 2)]},
            model=tiny_ckpt,
            fixed={"t": 0},
        )


def test_read_prompts_formats_agree(tmp_path):
    expected = {
        ((2,), 1): Prompt(points=[[30, 35], [50, 10]], labels=[1, 0]),
        ((2,), 3): Prompt(box=(5, 5, 15, 20)),
    }
    (tmp_path / "p.json").write_text(
        '[{"frame": 2, "obj_id": 1, "points": [[30, 35], [50, 10]], "labels": [1, 0]},'
        ' {"frame": [2], "obj_id": 3, "box": [15, 20, 5, 5]}]'
    )
    (tmp_path / "p.csv").write_text(
        "z,obj_id,row,col,label,row0,col0,row1,col1\n2,1,30,35,1,,,,\n2,1,50,10,negative,,,,\n2,3,,,,5,5,15,20\n"
    )
    (tmp_path / "napari.csv").write_text(
        "index,axis-0,axis-1,axis-2,label,obj_id\n0,2.0,30.0,35.0,1,1\n1,2.0,50.0,10.0,0,1\n"
    )
    rect = "index,shape-type,vertex-index,axis-0,axis-1,axis-2\n" + "".join(
        f"0,rectangle,{i},2.0,{r},{c}\n" for i, (r, c) in enumerate([(5, 5), (5, 20), (15, 20), (15, 5)])
    )
    (tmp_path / "shapes.csv").write_text(rect)

    def same(a, b):
        return a.keys() == b.keys() and all(
            np.array_equal(a[k].points, b[k].points)
            and np.array_equal(a[k].labels, b[k].labels)
            and a[k].box == b[k].box
            for k in a
        )

    assert same(read_prompts(tmp_path / "p.json"), expected)
    assert same(read_prompts(tmp_path / "p.csv"), expected)
    assert same(read_prompts(tmp_path / "napari.csv"), {((2,), 1): expected[((2,), 1)]})
    assert same(read_prompts(tmp_path / "shapes.csv"), {((2,), 1): expected[((2,), 3)]})
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    with pytest.raises(ProvenanceError, match="expected columns row, col"):
        read_prompts(tmp_path / "bad.csv")
    (tmp_path / "bad2.csv").write_text("row,col,label\n1,2,maybe\n")
    with pytest.raises(ProvenanceError, match="line 2: label 'maybe'"):
        read_prompts(tmp_path / "bad2.csv")
