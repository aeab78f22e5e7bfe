"""Provenance: what the labels files record, replay bit for bit, and the "copy as Python" script."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

import napari_sam2
from helpers import AUTO, CLICKS, TINY, make_volume, write_tiff
from napari_sam2 import Prompt, propagate, replay, segment, segment_everything
from napari_sam2.cli import main
from napari_sam2.engine.provenance import (
    ProvenanceError,
    labels_digest,
    python_script,
    read_labels,
    read_record,
    write_sidecar,
)
from napari_sam2.model import Sam2Model
from napari_sam2.model.checkpoint import save_checkpoint


def test_tiff_and_zarr_outputs_record_what_made_them(tiny_ckpt, vol_file, tmp_path):
    seg = segment(
        vol_file, CLICKS, model=tiny_ckpt, window=(10, 200), tile_size=32, overlap=8, out=tmp_path / "s.tif"
    )
    prop = propagate(vol_file, CLICKS, model=tiny_ckpt, stop_after_absent=3, out=tmp_path / "p.zarr")
    sha = hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    for path, result in ((tmp_path / "s.tif", seg), (tmp_path / "p.zarr", prop)):
        rec = read_record(path)
        assert rec.model == {
            "source": str(tiny_ckpt.resolve()),
            "sha256": sha,
            "name": "tiny-64",
            "family": "sam2",
            "fingerprint": rec.model["fingerprint"],
        }
        assert rec.image["path"] == str(vol_file.resolve()) and rec.image["shape"] == [4, 60, 70]
        assert rec.runtime["napari_sam2"] == napari_sam2.__version__ and rec.runtime["device"] == "cpu"
        assert rec.labels["sha256"] == labels_digest(read_labels(path)) == labels_digest(result.labels)
        assert {(tuple(e["frame"]), e["obj_id"]) for e in rec.prompts} == {((1,), 1), ((2,), 2)}
        assert rec.prompts[0]["points"] == [[30.0, 35.0], [50.0, 10.0]] and rec.prompts[0]["labels"] == [1, 0]
        assert rec.prompts[1]["box"] == [5.0, 5.0, 15.0, 20.0]
    s, p = read_record(tmp_path / "s.tif"), read_record(tmp_path / "p.zarr")
    assert s.window == [10.0, 200.0] and s.tiling == {
        "tile_size": 32,
        "overlap": 8,
        "max_tiles": 64,
        "edge_margin": 8,
    }
    lo, hi = np.percentile(make_volume(), [0.5, 99.5])
    assert p.window == pytest.approx([lo, hi]) and p.options["window_asked"] is None
    assert p.propagation == {
        "axis": "z",
        "fixed": {},
        "crop": "auto",
        "max_crop": None,
        "stop_after_absent": 3,
    }


def test_replay_reproduces_labels_bit_for_bit(tiny_ckpt, vol_file, tmp_path):
    segment(
        vol_file, CLICKS, model=tiny_ckpt, tile_size=32, overlap=8, multimask=True, out=tmp_path / "s.tif"
    )
    propagate(vol_file, CLICKS, model=tiny_ckpt, out=tmp_path / "p.zarr")
    for name in ("s.tif", "p.zarr"):
        original = np.asarray(read_labels(tmp_path / name)[:])
        again = replay(tmp_path / name)
        assert np.array_equal(np.asarray(again.labels), original) and original.any()
        assert labels_digest(again.labels) == read_record(tmp_path / name).labels["sha256"]


def test_replay_of_segment_everything_is_bit_exact(capsys, sharp_ckpt, vol_file, tmp_path):
    stack = segment_everything(vol_file, model=sharp_ckpt, seed_spacing=2, out=tmp_path / "a.tif", **AUTO)
    plane_file = write_tiff(tmp_path / "plane.tif", make_volume()[1])
    plane = segment_everything(plane_file, model=sharp_ckpt, min_area=5, out=tmp_path / "p.zarr", **AUTO)
    for name, result in (("a.tif", stack), ("p.zarr", plane)):
        original = np.asarray(read_labels(tmp_path / name)[:])
        assert original.any() and np.array_equal(original, np.asarray(result.labels[:]))
        assert main(["replay", str(tmp_path / name), "-q"]) == 0  # re-runs and compares every voxel
        assert "identical: the labels were reproduced bit for bit" in capsys.readouterr().out
    assert np.array_equal(replay(tmp_path / "p.zarr").labels, plane.labels[:])
    rec = read_record(tmp_path / "a.tif")
    assert rec.propagation["seed_frames"] == [1, 3] and rec.options["generator"]["points_per_side"] == 6
    script = stack.script()
    assert "segment_everything(" in script and "seed_frames=[1, 3]" in script and "Prompt" not in script
    assert "points_per_side=6," in script and "min_area=5," in plane.script()
    compile(script, "script", "exec")


def test_replay_refuses_a_changed_model_or_image(tiny_ckpt, vol_file, tmp_path):
    ckpt = tmp_path / "m.pt"
    ckpt.write_bytes(tiny_ckpt.read_bytes())
    segment(vol_file, CLICKS, model=ckpt, out=tmp_path / "s.tif")
    write_tiff(tmp_path / "small.tif", make_volume(planes=3))
    with pytest.raises(
        ProvenanceError, match=r"the image is \[3, 60, 70\] uint8 but the record was made on \[4, 60, 70\]"
    ):
        replay(tmp_path / "s.tif", image=tmp_path / "small.tif")
    torch.manual_seed(1)
    save_checkpoint(Sam2Model(TINY), ckpt)
    with pytest.raises(ProvenanceError, match="changed since the labels were made"):
        replay(tmp_path / "s.tif")
    vol_file.unlink()
    with pytest.raises(FileNotFoundError, match="image not found"):
        replay(tmp_path / "s.tif", model=tiny_ckpt)


def test_in_memory_images_need_the_image_to_replay(tiny_ckpt, tmp_path):
    result = segment(make_volume(), CLICKS, model=tiny_ckpt)
    side = write_sidecar(tmp_path / "labels.npy", result.record)
    assert side.name == "labels.npy.sam2.json"
    np.save(tmp_path / "labels.npy", result.labels)
    with pytest.raises(ProvenanceError, match="was in memory"):
        replay(tmp_path / "labels.npy")
    again = replay(tmp_path / "labels.npy", image=make_volume())
    assert np.array_equal(again.labels, result.labels)
    script = python_script(result.record)
    assert "IMAGE = None" in script and "set IMAGE to its file" in script


def test_files_without_provenance_say_so(tmp_path):
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((5, 5), np.uint8))
    with pytest.raises(ProvenanceError, match="carries no napari-sam2 provenance"):
        read_record(tmp_path / "plain.tif")
    with pytest.raises(FileNotFoundError):
        read_record(tmp_path / "gone.tif")


def test_python_script_reproduces_labels_in_a_new_process(tiny_ckpt, vol_file, tmp_path):
    result = propagate(vol_file, CLICKS, model=tiny_ckpt, out=tmp_path / "p.tif")
    script = tmp_path / "again.py"
    script.write_text(python_script(result.record))
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    run = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "again.tif")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    again = read_labels(tmp_path / "again.tif")
    assert np.array_equal(again, result.labels) and again.dtype == result.labels.dtype and again.any()
    assert read_record(tmp_path / "again.tif").prompts == result.record.prompts


def test_segment_script_uses_the_recorded_settings(tiny_ckpt, vol_file):
    result = segment(vol_file, {(1, 4): Prompt(points=[[30, 35]], labels=[1])}, model=tiny_ckpt, tile_size=32)
    script = result.script()
    assert (
        "segment(" in script and "tile_size=32" in script and "(1, 4): Prompt(points=[[30.0, 35.0]]" in script
    )
    compile(script, "script", "exec")


@pytest.mark.parametrize(
    ("kind", "old", "new"),
    [
        ("propagate", {"tracker_window": 64, "max_window": 128}, {"crop": 64, "max_crop": 128}),
        ("auto", {"tracker_window": "auto"}, {"tracker_crop": "auto"}),
    ],
)
def test_records_with_the_old_crop_names_still_replay(kind, old, new):
    """Records written before the tracker's crop got its own name ("window" is the intensity window)."""
    from napari_sam2.engine.provenance.record import ProvenanceRecord

    rec = ProvenanceRecord(kind, {}, [], {}, [0.0, 1.0], {}, {"axis": "z", **old}, {}, {})
    _, kwargs = rec.api_call()
    assert {k: kwargs[k] for k in new} == new and not set(old) & set(kwargs) and kwargs["axis"] == "z"
