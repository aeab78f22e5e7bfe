"""The whole product with the other SAM2-family models: loading by name (engine, API, CLI), the model
list, the image predictor with tiles of the model's input size, the tracker, segment everything,
provenance and replay. Random weights: shapes and bookkeeping, not segmentation quality."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

import napari_sam2
from helpers import CLICKS, make_volume, write_tiff
from napari_sam2.cli import main
from napari_sam2.engine import Prompt, Tracker, automask
from napari_sam2.engine.predictor import ImagePredictor
from napari_sam2.engine.provenance import read_record
from napari_sam2.model import Sam2Model, get_config
from napari_sam2.model.weights import CACHE_ENV_VAR, FAMILY_WEIGHTS

PROMPTS_CSV = (
    "z,obj_id,row,col,label,row0,col0,row1,col1\n1,1,30,35,1,,,,\n1,1,50,10,0,,,,\n2,2,,,,5,5,15,20\n"
)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    folder.mkdir()
    monkeypatch.setenv(CACHE_ENV_VAR, str(folder))
    return folder


def cache_official_file(folder: Path, name: str, monkeypatch) -> Path:
    """Random weights for registry entry ``name``, written as the publisher's file would be
    (``{"model": state_dict}``, no config) under its file name; an entry with a published digest
    is pointed at this file's digest and size (the real ones belong to the real weights)."""
    info = FAMILY_WEIGHTS[name]
    torch.manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Sam2Model(get_config(info.config)).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    path = folder / info.filename
    torch.save({"model": {k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}}, path)
    if info.sha256 is not None:
        monkeypatch.setitem(
            FAMILY_WEIGHTS, name, replace(info, sha256=sha256(path), size_bytes=path.stat().st_size)
        )
    return path


@pytest.mark.parametrize(
    ("asked", "entry", "config", "size"),
    [
        ("edgetam", "edgetam", "edgetam", 1024),
        ("efficienttam_ti_512", "efficienttam_ti_512x512", "efficienttam_ti_512x512", 512),
        ("efficienttam_ti_1", "efficienttam_ti_1", "efficienttam_ti_1", 1024),
        ("medsam2", "MedSAM2_latest", "medsam2", 512),
    ],
)
def test_family_files_load_by_name_and_by_path(cache, monkeypatch, asked, entry, config, size):
    path = cache_official_file(cache, entry, monkeypatch)
    by_name = napari_sam2.load_model(asked, download=False)
    assert by_name.config.name == config and by_name.config.image_size == size
    assert by_name.napari_sam2_source == {"source": entry, "sha256": sha256(path)}
    by_path = napari_sam2.load_model(path)
    assert by_path.config == by_name.config
    key = next(iter(by_path.state_dict()))
    assert torch.equal(by_path.state_dict()[key], by_name.state_dict()[key])
    assert by_path.napari_sam2_source == {"source": str(path.resolve()), "sha256": sha256(path)}


def test_unknown_name_lists_the_families(cache):
    with pytest.raises(KeyError, match=r"edgetam, MedSAM2_latest, .*efficienttam_ti, "):
        napari_sam2.load_model("efficienttam_tiny", download=False)


def test_models_list_shows_the_families_with_sizes(capsys, cache):
    assert main(["models", "list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert "EfficientTAM" in lines["efficienttam_ti"] and "68 MiB" in lines["efficienttam_ti"]
    assert "130 MiB" in lines["efficienttam_s"] and "2b572be30d9e96ee" in lines["efficienttam_s"]
    assert "fast on CPU" in lines["efficienttam_ti_1"] and "fast on CPU" in lines["edgetam"]
    assert "EdgeTAM" in lines["edgetam"] and "MedSAM2" in lines["MedSAM2_CTLesion"]
    assert "best quality" in lines["sam2.1_hiera_large"] and "medical" in lines["MedSAM2_latest"]


def test_cli_model_name_provenance_and_replay(capsys, cache, monkeypatch, tmp_path):
    """``--model efficienttam_ti_512`` loads the cached file; the labels record the family, and
    replaying them with the recorded model gives the same labels."""
    path = cache_official_file(cache, "efficienttam_ti_512x512", monkeypatch)
    vol = write_tiff(tmp_path / "vol.tif", make_volume())
    (tmp_path / "p.csv").write_text(PROMPTS_CSV)
    out = tmp_path / "s.tif"
    argv = [
        "segment",
        vol,
        "--prompts",
        tmp_path / "p.csv",
        "--out",
        out,
        "--model",
        "efficienttam_ti_512",
        "-q",
    ]
    assert main([str(a) for a in argv]) == 0
    record = read_record(out)
    assert record.model["family"] == "efficienttam" and record.model["name"] == "efficienttam_ti_512x512"
    assert record.model["source"] == "efficienttam_ti_512x512" and record.model["sha256"] == sha256(path)
    assert record.tiling["tile_size"] == 512  # the model's input size
    again = napari_sam2.replay(out)
    assert np.array_equal(again.labels, tifffile.imread(out))
    api = napari_sam2.segment(vol, CLICKS, model="efficienttam_ti_512")
    assert np.array_equal(api.labels, tifffile.imread(out))


# ---------------------------------------------------------------------------------------------- engine


@pytest.fixture(scope="module", params=["edgetam", "efficienttam_ti_1"])
def model_256(request):
    torch.manual_seed(0)
    return Sam2Model(replace(get_config(request.param), image_size=256)).eval()


def test_image_predictor_tiles_at_the_models_input_size(model_256):
    plane = np.zeros((600, 420), np.float32)
    plane[200:300, 100:220] = 1.0
    predictor = ImagePredictor(model_256)
    assert predictor.tile_size == 256
    predictor.set_image(plane)
    assert len(predictor.grid.tiles) == 6 and all(t.height == t.width == 256 for t in predictor.grid.tiles)
    pred = predictor.predict(Prompt(points=[[250, 160]], labels=[1]), multimask=True)
    r0, c0, r1, c1 = pred.bbox
    assert pred.masks.shape == (3, r1 - r0, c1 - c0) and pred.scores.shape == (3,)
    assert pred.full(pred.best).shape == plane.shape


def test_tracker_two_objects_forward_and_back(model_256):
    frames = torch.randn(5, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    tracker = Tracker(model_256, lambda i: frames[i], 5, (64, 48))
    first = tracker.add_prompt(0, 1, Prompt(points=[[30, 20]], labels=[1]))
    tracker.add_prompt(0, 2, Prompt(box=(5, 5, 20, 25)))
    assert first[1].shape == (64, 48)
    out = dict(tracker.propagate(start=0))
    assert list(out) == [0, 1, 2, 3, 4]
    assert all(set(v) <= {1, 2} and all(m.shape == (64, 48) for m in v.values()) for v in out.values())
    assert list(dict(tracker.propagate(start=4, reverse=True))) == [4, 3, 2, 1, 0]


def test_segment_everything_runs(model_256):
    plane = (np.random.default_rng(0).random((300, 200)) * 255).astype(np.uint8)
    report = automask.segment_everything(
        model_256, plane, points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    assert report.labels.shape == plane.shape and report.labels.dtype == np.uint32
    assert set(np.unique(report.labels)) <= {0, *report.objects}


def test_model_picker_lists_the_families_with_a_hint(qtbot, cache, monkeypatch):
    from napari_sam2.plugin._model_picker import ModelPicker

    picker = ModelPicker()
    qtbot.addWidget(picker)
    combo = picker.model_combo
    items = [combo.itemText(i) for i in range(combo.count())]
    assert {
        "sam2.1_hiera_tiny",
        "edgetam",
        "efficienttam_ti_1",
        "efficienttam_s_512x512",
        "MedSAM2_latest",
    } <= set(items)
    hints = {"efficienttam_ti_1": "EfficientTAM: fast on CPU", "edgetam": "EdgeTAM: fast on CPU"}
    hints |= {"sam2.1_hiera_large": "SAM 2 / 2.1: best quality", "MedSAM2_CTLesion": "MedSAM2: medical"}
    for name, hint in hints.items():
        combo.setCurrentText(name)
        assert picker.hint_label.text().startswith(hint)
        assert combo.itemData(items.index(name), 3).startswith(hint)  # 3: Qt's tool-tip role
    cache_official_file(cache, "efficienttam_ti_512x512", monkeypatch)
    source, work = picker.load_task("efficienttam_ti_512x512", "cpu")
    model = work(lambda done, total: None, lambda: False)  # cached: no download
    assert source == "efficienttam_ti_512x512" and model.config.image_size == 512
