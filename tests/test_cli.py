"""The napari-sam2 command: every subcommand end to end on generated files, against the API."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from helpers import AUTO, CLICKS, TINY, make_volume, write_tiff
from napari_sam2 import api, propagate, segment, segment_everything
from napari_sam2.cli import EXIT_FAILURE, EXIT_MISSING, EXIT_USAGE, main
from napari_sam2.engine import automask
from napari_sam2.engine.provenance import read_labels, read_record
from napari_sam2.engine.tiling import TileGrid
from napari_sam2.model.weights import CACHE_ENV_VAR

PROMPTS_CSV = (
    "z,obj_id,row,col,label,row0,col0,row1,col1\n1,1,30,35,1,,,,\n1,1,50,10,0,,,,\n2,2,,,,5,5,15,20\n"
)


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text(PROMPTS_CSV)
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_console_script_is_declared():
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("napari-sam2") == "napari_sam2.cli:main"


def test_segment_and_propagate_equal_the_api(capsys, tiny_ckpt, vol_file, prompts, tmp_path):
    code, out, _ = run(
        capsys,
        "segment",
        vol_file,
        "--prompts",
        prompts,
        "--out",
        tmp_path / "s.tif",
        "--model",
        tiny_ckpt,
        "--tile-size",
        32,
    )
    assert code == 0 and "2 object(s)" in out
    api = segment(vol_file, CLICKS, model=tiny_ckpt, tile_size=32)
    assert np.array_equal(tifffile.imread(tmp_path / "s.tif"), api.labels) and api.labels.any()

    code, out, _ = run(
        capsys,
        "propagate",
        vol_file,
        "--prompts",
        prompts,
        "--out",
        tmp_path / "p.zarr",
        "--model",
        tiny_ckpt,
        "-q",
    )
    assert code == 0
    api = propagate(vol_file, CLICKS, model=tiny_ckpt)
    assert np.array_equal(zarr.open_array(str(tmp_path / "p.zarr"), mode="r")[:], api.labels)
    assert read_record(tmp_path / "p.zarr").prompts == api.record.prompts


def test_auto_equals_the_api_and_the_engine(capsys, sharp_ckpt, vol_file, tmp_path):
    options = ("--points-per-side", 6, "--pred-iou-thresh", 0, "--stability-score-thresh", 0.5)
    argv = ("auto", vol_file, "--out", tmp_path / "a.tif", "--model", sharp_ckpt, "--seed-frames", "2,0")
    code, out, err = run(capsys, *argv, *options)  # with its progress bar
    assert code == 0 and "object(s), labels [4, 60, 70] uint32" in out and "auto" in err
    cli = tifffile.imread(tmp_path / "a.tif")
    ours = segment_everything(vol_file, model=sharp_ckpt, seed_frames=[2, 0], **AUTO)
    engine = automask.segment_everything(
        api.resolve_model(sharp_ckpt, "cpu"), make_volume(), seed_frames=[2, 0], **AUTO
    )
    assert np.array_equal(cli, ours.labels) and np.array_equal(ours.labels, engine.labels)
    assert len(engine.objects) >= 1 and cli.any()
    record = read_record(tmp_path / "a.tif")
    assert record.kind == "auto" and record.propagation["seed_frames"] == [2, 0]
    assert record.options["generator"] == ours.record.options["generator"]
    assert record.options["generator"]["stability_score_thresh"] == 0.5


def test_embed_fills_the_cache_that_segment_reads(capsys, tiny_ckpt, vol_file, prompts, tmp_path):
    cache = tmp_path / "emb"
    code, out, _ = run(
        capsys,
        "embed",
        vol_file,
        "--model",
        tiny_ckpt,
        "--cache-dir",
        cache,
        "--tile-size",
        32,
        "--frames",
        "1-2",
    )
    n = 2 * len(TileGrid.for_plane((60, 70), 32, 8).tiles)
    assert (
        code == 0
        and f": {n} computed, 0 already cached" in out
        and out.startswith(f"{n} tile embedding(s) of 2 plane(s)")
    )
    assert len(list(cache.glob("*/*.zarr"))) == n
    code, out, _ = run(
        capsys,
        "embed",
        vol_file,
        "--model",
        tiny_ckpt,
        "--cache-dir",
        cache,
        "--tile-size",
        32,
        "--frames",
        "1-2",
        "-q",
    )
    assert f": 0 computed, {n} already cached" in out
    args = ("--prompts", prompts, "--model", tiny_ckpt, "--tile-size", 32, "-q")
    assert run(capsys, "segment", vol_file, *args, "--out", tmp_path / "a.tif", "--cache-dir", cache)[0] == 0
    assert run(capsys, "segment", vol_file, *args, "--out", tmp_path / "b.tif")[0] == 0
    assert np.array_equal(tifffile.imread(tmp_path / "a.tif"), tifffile.imread(tmp_path / "b.tif"))
    assert len(list(cache.glob("*/*.zarr"))) == n  # nothing new was encoded for the prompted planes


def test_replay_compares_and_detects_edits(capsys, tiny_ckpt, vol_file, prompts, tmp_path):
    out = tmp_path / "p.tif"
    assert (
        run(capsys, "propagate", vol_file, "--prompts", prompts, "--out", out, "--model", tiny_ckpt, "-q")[0]
        == 0
    )
    code, text, _ = run(capsys, "replay", out, "-q")
    assert code == 0 and "identical" in text
    code, _, _ = run(capsys, "replay", out, "--out", tmp_path / "again.zarr", "-q")
    assert code == 0 and np.array_equal(read_labels(tmp_path / "again.zarr")[:], tifffile.imread(out))
    code, text, _ = run(capsys, "replay", out, "--script")
    assert code == 0 and "propagate(" in text and str(vol_file.resolve()) in text

    edited = tifffile.imread(out)
    edited[0, 0, 0] += 1
    with tifffile.TiffFile(out) as tif:
        meta = tif.shaped_metadata[0]
    meta.pop("shape")
    tifffile.imwrite(out, edited, photometric="minisblack", metadata=meta)
    code, _, err = run(capsys, "replay", out, "-q")
    assert code == EXIT_FAILURE and "in 1 voxel(s) (the file was changed after" in err


def test_models_list_path_verify_download(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    code, out, _ = run(capsys, "models", "path")
    assert code == 0 and out.strip() == str(tmp_path / "cache")
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "sam2.1_hiera_tiny" in out and "7402e0d864fa8270" in out and "demo" in out
    code, out, _ = run(capsys, "models", "verify")
    assert code == 0 and "no official weights cached" in out
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "sam2.1_hiera_tiny.pt").write_bytes(b"not the weights")
    code, out, _ = run(capsys, "models", "verify")
    assert code == EXIT_FAILURE and "sam2.1_hiera_tiny: FAILED: it has 15 bytes, expected 156,008,466" in out
    code, out, _ = run(capsys, "models", "verify", "sam2.1_hiera_small")
    assert code == EXIT_MISSING and "not cached" in out
    code, _, err = run(capsys, "models", "download", "sam2.1_hiera_tinyy")
    assert code == EXIT_USAGE and "Did you mean 'sam2.1_hiera_tiny'" in err


def test_train_subcommand_writes_a_loadable_checkpoint(capsys, tiny_ckpt, tmp_path):
    with torch_grad():
        vol = make_volume()
        write_tiff(tmp_path / "img.tif", vol)
        labels = (vol > 200).astype(np.uint16)
        tifffile.imwrite(tmp_path / "lbl.tif", labels, photometric="minisblack", metadata={"axes": "ZYX"})
        argv = ["train", "--image", tmp_path / "img.tif", "--labels", tmp_path / "lbl.tif", "--axes", "zyx"]
        code, out, _ = run(
            capsys, *argv, "--model", tiny_ckpt, "--out", tmp_path / "ft.pt", "--steps", 2, "--clip-frames", 2
        )
    assert code == 0 and "after 2 steps" in out
    from napari_sam2 import load_model

    assert load_model(tmp_path / "ft.pt", device="cpu").config.name == TINY.name


def torch_grad():
    import torch

    return torch.inference_mode(False)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (
            ["segment", "{missing}", "--prompts", "{prompts}", "--out", "{out}"],
            EXIT_MISSING,
            "image not found",
        ),
        (
            ["segment", "{vol}", "--prompts", "{missing}", "--out", "{out}"],
            EXIT_MISSING,
            "prompts file not found",
        ),
        (
            ["segment", "{vol}", "--prompts", "{prompts}", "--out", "{out}", "--model", "{missing}.pt"],
            EXIT_MISSING,
            "checkpoint file not found",
        ),
        (
            ["segment", "{vol}", "--prompts", "{prompts}", "--out", "{out}", "--model", "sam2_huge"],
            EXIT_USAGE,
            "neither a file nor a known model name",
        ),
        (
            ["segment", "{vol}", "--prompts", "{bad}", "--out", "{out}", "--model", "{ckpt}"],
            EXIT_FAILURE,
            "expected columns row, col",
        ),
        (
            ["segment", "{vol}", "--prompts", "{prompts}", "--out", "{prompts}", "--model", "{ckpt}"],
            EXIT_FAILURE,
            "as .tif/.tiff or .zarr",
        ),
        (
            ["segment", "{bad}", "--prompts", "{prompts}", "--out", "{out}", "--model", "{ckpt}"],
            EXIT_FAILURE,
            "unsupported file type",
        ),
        (
            ["propagate", "{vol}", "--prompts", "{prompts}", "--out", "{out}", "--window", "9,1"],
            EXIT_USAGE,
            "above high",
        ),
        (
            ["propagate", "{vol}", "--prompts", "{prompts}", "--out", "{out}", "--fixed", "q=1"],
            EXIT_USAGE,
            "AXIS=INDEX",
        ),
        (
            ["auto", "{vol}", "--out", "{out}", "--pred-iou-thresh", "1.5"],
            EXIT_USAGE,
            "pred_iou_thresh must be a number in [0, 1]; got 1.5",
        ),
        (
            ["auto", "{vol}", "--out", "{out}", "--points-per-side", "0"],
            EXIT_USAGE,
            "points_per_side must be an int in [1, 1024]; got 0",
        ),
        (["auto", "{vol}", "--out", "{out}", "--points-per-side", "8.5"], EXIT_USAGE, "invalid int value"),
        (
            ["auto", "{vol}", "--out", "{out}", "--crop-n-layers", "1", "--model", "{ckpt}"],
            EXIT_USAGE,
            "crop_n_layers=1 needs a plane that fits one model input",
        ),
        (
            ["auto", "{vol}", "--out", "{out}", "--seed-frames", "1,7", "--model", "{ckpt}"],
            EXIT_USAGE,
            "seed_frames must be frame numbers in 0..3 along z",
        ),
        (["auto", "{missing}", "--out", "{out}"], EXIT_MISSING, "image not found"),
        (["replay", "{vol}"], EXIT_FAILURE, "carries no napari-sam2 provenance"),
        (["frobnicate"], EXIT_USAGE, "invalid choice"),
    ],
)
def test_bad_arguments_and_files(capsys, tmp_path, tiny_ckpt, vol_file, prompts, argv, code, message):
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    names = {"missing": tmp_path / "nope", "prompts": prompts, "out": tmp_path / "o.tif", "vol": vol_file}
    names.update(bad=tmp_path / "bad.csv", ckpt=tiny_ckpt)
    argv = [a.format(**names) for a in argv]
    try:
        got = main(argv)
    except SystemExit as exc:  # argparse's own usage errors
        got = exc.code
    err = capsys.readouterr().err
    assert got == code, err
    assert message in err and "napari-sam2" in err
    assert not (tmp_path / "o.tif").exists()


def test_errors_from_the_installed_command_have_no_traceback(tmp_path):
    argv = [
        "segment",
        str(tmp_path / "nope.tif"),
        "--prompts",
        str(tmp_path / "p.csv"),
        "--out",
        str(tmp_path / "o.tif"),
    ]
    command = Path(sys.executable).parent / "napari-sam2"  # the console script pip installed
    result = subprocess.run([str(command), *argv], capture_output=True, text=True)
    assert result.returncode == EXIT_MISSING
    assert result.stderr.strip() == f"napari-sam2: error: image not found: {tmp_path / 'nope.tif'}"


def test_existing_output_needs_force(capsys, tiny_ckpt, vol_file, prompts, tmp_path):
    out = tmp_path / "s.tif"
    args = ("segment", vol_file, "--prompts", prompts, "--out", out, "--model", tiny_ckpt, "-q")
    assert run(capsys, *args)[0] == 0
    code, _, err = run(capsys, *args)
    assert code == EXIT_FAILURE and "pass --force" in err
    assert run(capsys, *args, "--force")[0] == 0
