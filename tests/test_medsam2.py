"""MedSAM2's intensity conventions, chosen when a MedSAM2 checkpoint is in use: the window on real CT
and MR volumes equals the authors' rule computed here from the file (nibabel, numpy), an explicit
window wins, the provenance record says which window and why, and the widget shows it.

The rule (engine/window_choice.py cites the authors' scripts): CT is clipped to -150..250 HU and
min-max scaled; other modalities are clipped to the 0.5th and 99.5th percentiles of the voxels
above 0 and min-max scaled."""

from __future__ import annotations

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")

from helpers import save_medsam2, shared_file  # noqa: E402
from napari_sam2 import Prompt, load_model, segment  # noqa: E402
from napari_sam2.engine.intensity import IntensityWindow, foreground_window, robust_window  # noqa: E402
from napari_sam2.engine.provenance import read_record  # noqa: E402
from napari_sam2.engine.sources import open_image  # noqa: E402
from napari_sam2.engine.window_choice import (  # noqa: E402
    choose_window,
    medsam2_ct_window,
    medsam2_percentile_window,
    window_convention,
)

CT = ("ct-mr-totalsegmentator", "example_ct_sm.nii.gz")
MR = ("ct-mr-totalsegmentator", "example_mr_sm.nii.gz")
CLICK = Prompt(points=[[50, 60]], labels=[1])


@pytest.fixture(scope="module")
def medsam2_ckpt(tmp_path_factory):
    return save_medsam2(tmp_path_factory.mktemp("medsam2"))


@pytest.fixture(scope="module")
def medsam2(medsam2_ckpt):
    model = load_model(medsam2_ckpt)
    assert model.config.name == "medsam2" and model.config.image_size == 512
    return model


def authors_ct_window(volume: np.ndarray) -> tuple[float, float]:
    """What the authors' scripts map to 0 and 255: the clipped volume's minimum and maximum."""
    clipped = np.clip(volume.astype(np.float64), -150.0, 250.0)
    return float(clipped.min()), float(clipped.max())


def authors_mr_window(volume: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(volume[volume > 0], [0.5, 99.5])
    clipped = np.clip(volume.astype(np.float64), low, high)
    return float(clipped.min()), float(clipped.max())


def test_only_a_medsam2_model_has_a_window_convention(medsam2, tiny_ckpt):
    assert window_convention(medsam2) == "MedSAM2"
    assert window_convention(load_model(tiny_ckpt)) is None and window_convention(object()) is None


def test_ct_gets_the_authors_ct_window_and_the_record_says_why(medsam2_ckpt, tmp_path):
    path = shared_file(*CT)
    expected = authors_ct_window(np.asarray(nib.load(path).dataobj))
    assert expected == (-150.0, 250.0)  # this volume holds air and bone
    out = tmp_path / "ct_labels.nii.gz"
    result = segment(path, {(5, 1): CLICK}, model=medsam2_ckpt, out=out)
    record = read_record(out)  # from the sidecar
    assert tuple(record.window) == expected == tuple(result.record.window)
    assert record.options["window_asked"] is None and record.options["window_rule"] == "medsam2_ct"
    assert record.options["window_from"] == "MedSAM2's CT window -150..250 HU (CT from the values)"
    assert record.model["family"] == "medsam2"
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(path).affine)


def test_mr_gets_the_authors_percentiles_of_the_voxels_above_zero(medsam2_ckpt):
    path = shared_file(*MR)
    volume = np.asarray(nib.load(path).dataobj)
    assert volume.min() < 0  # this MR has a few negative values: they do not count
    expected = authors_mr_window(volume)
    result = segment(path, {(10, 1): Prompt(box=(30, 30, 60, 70))}, model=medsam2_ckpt)
    assert tuple(result.record.window) == pytest.approx(expected, rel=0, abs=1e-9)
    assert result.record.options["window_rule"] == "medsam2_percentiles"
    assert result.record.options["window_from"].startswith(
        "MedSAM2's window, 0.5-99.5 % of the values above 0"
    )


def test_an_explicit_window_wins_over_medsam2s(medsam2_ckpt):
    result = segment(shared_file(*CT), {(5, 1): CLICK}, model=medsam2_ckpt, window=(-1000.0, 1000.0))
    assert result.record.window == [-1000.0, 1000.0]
    assert result.record.options["window_rule"] == "asked"
    assert result.record.options["window_asked"] == [-1000.0, 1000.0]


def test_choose_window_order_for_each_kind_of_model_and_data(medsam2, tiny_ckpt):
    tiny, demo = load_model(tiny_ckpt), load_model("demo")
    assert window_convention(demo) == "the demo model"
    with open_image(shared_file(*CT)) as ct, open_image(shared_file(*MR)) as mr:
        for model, data, rule, window in [
            (medsam2, ct, "medsam2_ct", (-150.0, 250.0)),
            (tiny, ct, "preset", (-160.0, 240.0)),  # other models: the CT volume's soft-tissue preset
            (demo, ct, "preset", (-160.0, 240.0)),  # the demo model too
            (medsam2, mr, "medsam2_percentiles", None),
            (tiny, mr, "auto", robust_window(mr.sample_values()).as_tuple()),
            (demo, mr, "auto", robust_window(mr.sample_values()).as_tuple()),  # a medical volume: no
        ]:
            choice = choose_window(None, model=model, geometry=data.medical, sample=data.sample_values)
            assert choice.rule == rule
            if window is not None:
                assert choice.window.as_tuple() == window
        assert window_convention(demo, mr.medical) is None and window_convention(demo) == "the demo model"
        # the same MR values as a plain array (microscopy for all the rule knows): the demo model's own
        choice = choose_window(None, model=demo, geometry=None, sample=mr.sample_values)
        assert choice.rule == "demo_foreground" and choice.text.startswith("the demo model's window, 0.5 %")
        assert choice.window == foreground_window(mr.sample_values())
        assert choice.window.high < robust_window(mr.sample_values()).high
        asked = choose_window("ct:lung", model=medsam2, geometry=ct.medical, sample=ct.sample_values)
        assert (asked.rule, asked.window.as_tuple(), asked.text) == (
            "asked",
            (-1350.0, 150.0),
            "as asked (ct:lung): -1350..150",
        )
    # an array without a medical header: CT is told by its values (air at about -1000 HU)
    hu = np.full((4, 30, 30), -1000, np.int16)
    hu[:, 10:20, 10:20] = 40
    choice = choose_window(None, model=medsam2, geometry=None, sample=hu.ravel)
    assert choice.rule == "medsam2_ct" and choice.text.endswith("(CT by its values)")


def test_the_rules_keep_the_authors_min_max_and_handle_odd_volumes():
    # a volume inside the window: min-max stretches it, so the window is its own range
    assert medsam2_ct_window(np.array([-100, 0, 100])) == IntensityWindow(-100.0, 100.0)
    assert medsam2_ct_window(np.array([300, 900])) == IntensityWindow(250.0, 250.0)  # all bone
    values = np.concatenate([np.zeros(1000), np.arange(1.0, 201.0)])
    expected = np.percentile(np.arange(1.0, 201.0), [0.5, 99.5])
    assert medsam2_percentile_window(values).as_tuple() == tuple(expected)  # zeros are left out
    assert medsam2_percentile_window(np.array([-5.0, -1.0, np.nan])).as_tuple() == pytest.approx(
        tuple(np.percentile([-5.0, -1.0], [0.5, 99.5]))
    )  # nothing above 0: all finite values


@pytest.fixture
def viewer(make_napari_viewer):
    return make_napari_viewer()


def test_the_widget_uses_and_names_medsam2s_window(viewer, qtbot, medsam2):
    from napari_sam2.plugin._widget import Sam2Widget

    ct = viewer.open(shared_file(*CT), plugin="napari-sam2")[0]
    widget = Sam2Widget(viewer, threaded=False)
    qtbot.addWidget(widget)
    assert widget.data.window(ct) == (-160.0, 240.0)  # no model yet: the reader's CT preset
    widget.set_model(medsam2, "MedSAM2_latest")
    assert widget.data.window_label.text() == "MedSAM2's CT window -150..250 HU (CT from the values) (fixed)"
    assert widget.data.window(ct) == (-150.0, 250.0)
    widget.data.window_combo.setCurrentText("display contrast")  # an explicit choice still wins
    assert widget.data.window(ct) == tuple(float(v) for v in ct.contrast_limits)


def test_the_widget_keeps_a_medical_volumes_window_with_the_demo_model(viewer, qtbot, monkeypatch):
    """The demo model's own window is for microscopy: on a volume opened with napari-sam2's reader the
    widget keeps the reader's window (CT preset; robust percentiles for the MR), before and after the
    first action, and says so. The volumes are treated as large (the window line is written before
    any window is computed), where the line once named the demo model's window for the CT."""
    from napari_sam2.plugin import _data
    from napari_sam2.plugin._data import default_window
    from napari_sam2.plugin._widget import Sam2Widget

    monkeypatch.setattr(_data, "_EAGER_VALUES", 0)

    ct, mr = (viewer.open(shared_file(*case), plugin="napari-sam2")[0] for case in (CT, MR))
    widget = Sam2Widget(viewer, threaded=False)
    qtbot.addWidget(widget)
    widget.set_model(load_model("demo"), "demo")
    for layer in (ct, mr):
        widget.data.image_combo.setCurrentText(layer.name)
        widget.data.show_window()
        assert "demo model" not in widget.data.window_label.text()
        window = widget.data.window(layer)
        assert "demo model" not in widget.data.window_label.text()
        assert window == tuple(layer.metadata["napari_sam2_medical"]["window"])
        # the console's default is the widget's (its window line aside)
        assert (
            default_window(layer, widget.models.model, lambda layer=layer: np.asarray(layer.data))[0]
            == window
        )
    assert widget.data.window(ct) == (-160.0, 240.0)
