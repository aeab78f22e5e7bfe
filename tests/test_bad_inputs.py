"""Bad inputs through the API and the command line (issue 24): outputs that cannot or must not be
written, prompt files and object ids, model names, 3D + time, guessed axes. Every input file is
hashed before and after: a failed run must leave it exactly as it was."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from helpers import CLICKS, make_model, make_volume, write_tiff
from napari_sam2 import api, load_model, propagate, read_prompts, replay, segment
from napari_sam2.api import batch
from napari_sam2.cli import EXIT_FAILURE, EXIT_USAGE, main
from napari_sam2.engine import LabelWriter, Prompt, PromptError, track_through_time
from napari_sam2.engine.provenance import OutputError, guard_output, labels_digest, read_record
from napari_sam2.engine.provenance.outputs import atomic_output
from napari_sam2.engine.sources import open_image
from napari_sam2.model import weights
from napari_sam2.model.checkpoint import save_checkpoint
from napari_sam2.model.weights import CACHE_ENV_VAR, UnknownWeightsError

OUTSIDE_CSV = "z,obj_id,row,col,label\n1,1,300,35,1\n"  # row 300 of a 60-row image
BOXES_CSV = "z,obj_id,row0,col0,row1,col1\n1,1,18,23,42,47\n2,4,4,4,16,22\n"


def digest(path: Path) -> str:
    """SHA-256 of a file, or of every file (name and bytes) under a folder."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for f in files:
        h.update(str(f.relative_to(path.parent)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def hashes(*paths: Path) -> dict[Path, str]:
    return {p: digest(p) for p in paths}


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(folder: Path) -> list[str]:
    return sorted(
        p.name for p in folder.iterdir() if ".tmp-" in p.name or ".old-" in p.name or ".probe-" in p.name
    )


@pytest.fixture
def keep(tmp_path):
    """An existing labels file the user cares about."""
    path = tmp_path / "keep.tif"
    tifffile.imwrite(path, np.full((4, 60, 70), 5, np.uint32), photometric="minisblack")
    return path


# ---------------------------------------------------------------------------------------------- 3: --force
def test_force_keeps_the_old_output_when_the_run_fails(capsys, tiny_ckpt, vol_file, keep, tmp_path):
    outside = tmp_path / "outside.csv"
    outside.write_text(OUTSIDE_CSV)
    before = hashes(vol_file, outside, keep)

    args = ["segment", vol_file, "--prompts", outside, "--out", keep, "--force", "--model", tiny_ckpt, "-q"]
    code, _, err = run(capsys, *args)
    assert code == EXIT_FAILURE and "outside the 60 x 70 plane" in err
    with pytest.raises(PromptError, match="outside the 60 x 70 plane"):
        segment(vol_file, outside, model=tiny_ckpt, out=keep, force=True)
    assert hashes(vol_file, outside, keep) == before and leftovers(tmp_path) == []

    # a run that succeeds replaces it, with the same labels as the API's
    prompts = tmp_path / "boxes.csv"
    prompts.write_text(BOXES_CSV)
    code, _, _ = run(
        capsys,
        "segment",
        vol_file,
        "--prompts",
        prompts,
        "--out",
        keep,
        "--force",
        "--model",
        tiny_ckpt,
        "-q",
    )
    assert code == 0
    expected = segment(vol_file, prompts, model=tiny_ckpt).labels
    assert np.array_equal(tifffile.imread(keep), expected) and leftovers(tmp_path) == []


def test_a_failure_while_writing_leaves_the_old_file_and_no_temporary(tiny_ckpt, vol_file, keep, monkeypatch):
    before = hashes(vol_file, keep)

    def broken_disk(path, *args, **kwargs):
        Path(path).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", broken_disk)
    with pytest.raises(OSError, match="No space left"):
        segment(vol_file, CLICKS, model=tiny_ckpt, tile_size=32, out=keep, force=True)
    assert hashes(vol_file, keep) == before and leftovers(keep.parent) == []


def test_atomic_output_replaces_a_zarr_folder_only_when_complete(tmp_path):
    out = tmp_path / "lab.zarr"
    zarr.create_array(store=str(out), shape=(4, 4), dtype="uint8", fill_value=3)
    before = digest(out)
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        zarr.create_array(store=str(tmp), shape=(4, 4), dtype="uint8", fill_value=7)
        raise RuntimeError("interrupted")
    assert digest(out) == before and leftovers(tmp_path) == []
    with atomic_output(out) as tmp:
        zarr.create_array(store=str(tmp), shape=(4, 4), dtype="uint8", fill_value=7)
    assert int(zarr.open_array(str(out), mode="r")[0, 0]) == 7 and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------------- 4: outputs first
def _unwritable_outputs(tmp_path: Path) -> list[tuple[Path, str]]:
    a_file = tmp_path / "not_a_folder"
    a_file.write_text("x")
    cases = [
        (a_file / "lab.tif", f"{a_file} is not a folder"),
        (tmp_path / "missing" / "lab.tif", f"the folder {tmp_path / 'missing'} does not exist"),
    ]
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:  # root writes anywhere: the read-only case is only possible for other users
        (locked / "probe").write_text("x")
        (locked / "probe").unlink()
    except OSError:
        cases.append((locked / "lab.zarr", f"the folder {locked} is not writable"))
    return cases


def test_an_unwritable_output_fails_before_any_model_work(capsys, vol_file, tmp_path):
    prompts = tmp_path / "boxes.csv"
    prompts.write_text(BOXES_CSV)
    before = hashes(vol_file, prompts)
    missing_model = tmp_path / "no_such_model.pt"  # loading it would fail: the output is checked first
    for out, message in _unwritable_outputs(tmp_path):
        with pytest.raises(OutputError) as err:
            propagate(vol_file, prompts, model=missing_model, out=out)
        assert message in str(err.value) and ".tmp-" not in str(err.value)
        with pytest.raises(OutputError, match=message.split(" ")[-1]):
            segment(vol_file, prompts, model=missing_model, out=out)
        with pytest.raises(OutputError, match=message.split(" ")[-1]):
            api.segment_everything(vol_file, model=missing_model, out=out)
    a_file_out = tmp_path / "not_a_folder" / "lab.tif"
    code, _, err = run(
        capsys, "propagate", vol_file, "--prompts", prompts, "--out", a_file_out, "--model", missing_model
    )
    assert code == EXIT_FAILURE and f"{tmp_path / 'not_a_folder'} is not a folder" in err
    with pytest.raises(OutputError, match="is not a folder"):
        batch.plan([vol_file], tmp_path / "not_a_folder" / "sub", prompts=str(prompts))
    assert hashes(vol_file, prompts) == before


def test_cancelled_zarr_runs_leave_no_temporary_folder(tiny_ckpt, vol_file, tmp_path):
    before = hashes(vol_file)
    out = tmp_path / "lab.zarr"
    calls = []

    def cancel_after_one_frame():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(api.Cancelled, match="cancelled after") as err:
        propagate(vol_file, CLICKS, model=tiny_ckpt, out=out, cancel=cancel_after_one_frame)
    assert err.value.labels is None  # the unfinished folder is gone, so no array points into it
    assert not out.exists() and leftovers(tmp_path) == [] and hashes(vol_file) == before
    with pytest.raises(api.Cancelled):
        segment(vol_file, CLICKS, model=tiny_ckpt, tile_size=32, out=out, cancel=lambda: True)
    assert not out.exists() and leftovers(tmp_path) == []


def test_leftovers_of_dead_runs_are_removed_and_reported(capsys, tiny_ckpt, vol_file, tmp_path):
    dead = 2**22 + 12345  # above the default pid_max of 4194304: no such process
    alive = os.getppid()
    out = tmp_path / "lab.zarr"
    stale, running = tmp_path / f".lab.zarr.tmp-{dead}", tmp_path / f".lab.zarr.tmp-{alive}"
    for folder in (stale, running):
        zarr.create_array(store=str(folder), shape=(2, 2), dtype="uint8")
    with pytest.warns(UserWarning, match=rf"removed \.lab\.zarr\.tmp-{dead}, left by an interrupted run"):
        propagate(vol_file, CLICKS, model=tiny_ckpt, out=out)
    assert not stale.exists() and running.exists()  # another live process's work is never touched

    zarr.create_array(store=str(stale), shape=(2, 2), dtype="uint8")
    prompts = tmp_path / "boxes.csv"
    prompts.write_text(BOXES_CSV)
    code, _, err = run(
        capsys, "segment", vol_file, "--prompts", prompts, "--out", out, "--force", "--model", tiny_ckpt, "-q"
    )
    assert code == 0 and f"note: removed .lab.zarr.tmp-{dead}, left by an interrupted run" in err
    assert not stale.exists() and running.exists()
    assert guard_output(out, force=True) == []


# ---------------------------------------------------------------------------------------------- 5: boxes only
def test_a_csv_of_boxes_only(capsys, tiny_ckpt, vol_file, tmp_path):
    prompts = tmp_path / "boxes.csv"
    prompts.write_text(BOXES_CSV)
    before = hashes(vol_file, prompts)
    got = read_prompts(prompts)
    assert set(got) == {((1,), 1), ((2,), 4)} and got[((2,), 4)].box == (4.0, 4.0, 16.0, 22.0)
    assert all(len(p.points) == 0 for p in got.values())
    result = segment(vol_file, prompts, model=tiny_ckpt, tile_size=32)
    code, _, _ = run(
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
        "-q",
    )
    assert code == 0 and np.array_equal(tifffile.imread(tmp_path / "s.tif"), result.labels)
    assert [e["box"] for e in read_record(tmp_path / "s.tif").prompts] == [[18, 23, 42, 47], [4, 4, 16, 22]]
    assert hashes(vol_file, prompts) == before


# ---------------------------------------------------------------------------------------------- 6: object ids
@pytest.mark.parametrize("obj", [0, -3])
def test_object_ids_below_one_fail_before_any_work(capsys, vol_file, tmp_path, obj):
    missing_model = tmp_path / "no_such_model.pt"  # the ids are checked before the model is loaded
    prompts = {(1, obj): Prompt(points=[[30, 35]], labels=[1])}
    message = f"object ids are positive ints, got {obj}"
    for call in (segment, propagate):
        with pytest.raises(PromptError, match=message):
            call(vol_file, prompts, model=missing_model)
    csv = tmp_path / "ids.csv"
    csv.write_text(f"z,obj_id,row,col\n1,{obj},30,35\n")
    before = hashes(vol_file, csv)
    for command in ("segment", "propagate"):
        code, _, err = run(
            capsys, command, vol_file, "--prompts", csv, "--out", tmp_path / "x.tif", "--model", missing_model
        )
        assert code == EXIT_FAILURE and message in err
    assert hashes(vol_file, csv) == before and not (tmp_path / "x.tif").exists()


# ---------------------------------------------------------------------------------------------- 7: model names
def test_a_typo_in_an_official_name_is_an_unknown_name(capsys, vol_file, tmp_path):
    with pytest.raises(
        UnknownWeightsError, match=r"did you mean 'sam2.1_hiera_tiny'.*names: .*sam2_hiera_large"
    ):
        load_model("sam2.1_hiera_tinyy")
    prompts = tmp_path / "boxes.csv"
    prompts.write_text(BOXES_CSV)
    code, _, err = run(
        capsys,
        "segment",
        vol_file,
        "--prompts",
        prompts,
        "--out",
        tmp_path / "x.tif",
        "--model",
        "sam2.1_hiera_tinyy",
    )
    assert code == EXIT_USAGE and "did you mean 'sam2.1_hiera_tiny'" in err and "names: " in err
    code, _, err = run(
        capsys,
        "segment",
        vol_file,
        "--prompts",
        prompts,
        "--out",
        tmp_path / "x.tif",
        "--model",
        tmp_path / "mine.pt",
    )
    assert code == 3 and "checkpoint file not found" in err  # a missing file stays a missing file


def test_missing_weights_offline_is_one_line(capsys, monkeypatch, vol_file, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "_default_urls", lambda info: ["http://127.0.0.1:9/" + info.filename])
    prompts = tmp_path / "boxes.csv"
    prompts.write_text(BOXES_CSV)
    code, _, err = run(
        capsys,
        "segment",
        vol_file,
        "--prompts",
        prompts,
        "--out",
        tmp_path / "x.tif",
        "--model",
        "sam2.1_hiera_tiny",
        "-q",
    )
    assert code == 3 and err.count("\n") == 1, err
    assert err.startswith("napari-sam2: error: Could not download the SAM2 weights 'sam2.1_hiera_tiny'")
    assert "--debug" in err and not (tmp_path / "x.tif").exists()


def test_models_list_shows_every_official_size(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    code, out, _ = run(capsys, "models", "list")
    # columns: name, family (words), size (number, unit), cached, ...: the size is the first "<n> MiB"
    rows = {}
    for line in out.splitlines()[1:]:
        words = line.split()
        if line.startswith("sam2"):
            i = words.index("MiB") if "MiB" in words else None
            rows[words[0]] = words[i - 1 : i + 1] if i else ["?", ""]
    assert code == 0 and len(rows) == 8
    assert rows["sam2_hiera_small"] == ["176", "MiB"]  # 184,309,650 bytes
    assert all(size != "?" for size, _ in rows.values())


# ---------------------------------------------------------------------------------------------- 8: 3D + time
def test_propagate_through_z_and_t(capsys, tmp_path):
    rng = np.random.default_rng(1)
    movie = rng.integers(0, 255, size=(3, 4, 48, 56)).astype(np.uint8)
    image = write_tiff(tmp_path / "movie.tif", movie)
    model = make_model(score_bias=20.0)  # always present: every time point gets the object
    ckpt = save_checkpoint(model, tmp_path / "m.pt")
    prompts = {(1, 2, 7): Prompt(points=[[20, 25]], labels=[1])}
    before = hashes(image, ckpt)

    expected = np.zeros(movie.shape, np.uint32)
    net = api.resolve_model(ckpt, "cpu")
    track_through_time(net, movie, prompts, LabelWriter(expected))
    result = propagate(image, prompts, model=ckpt, axis="z+t")
    assert np.array_equal(result.labels, expected) and all(expected[t].any() for t in range(3))
    assert result.record.propagation["axis"] == "z+t" and result.record.propagation["fixed"] == {}
    again = replay(result.record)
    assert labels_digest(again.labels) == labels_digest(expected)
    assert "axis='z+t'," in result.script() and "fixed={}," in result.script()

    csv = tmp_path / "p.csv"
    csv.write_text("t,z,obj_id,row,col\n1,2,7,20,25\n")
    out = tmp_path / "tz.zarr"
    code, _, _ = run(
        capsys, "propagate", image, "--prompts", csv, "--axis", "z+t", "--out", out, "--model", ckpt, "-q"
    )
    assert code == 0 and np.array_equal(zarr.open_array(str(out), mode="r")[:], expected)
    code, out_text, _ = run(capsys, "replay", out, "-q")
    assert code == 0 and "identical" in out_text
    assert hashes(image, ckpt) == before

    with pytest.raises(ValueError, match=r"needs a \(t, z, y, x\) image"):
        propagate(movie[0], {(2, 7): prompts[(1, 2, 7)]}, model=ckpt, axis="z+t")


# ---------------------------------------------------------------------------------------------- 10: guessed axes
def test_guessed_time_axes_are_reported(capsys, tiny_ckpt, tmp_path):
    stack = make_volume()
    image = tmp_path / "movie.tif"
    tifffile.imwrite(image, stack, photometric="minisblack")  # no axes: tifffile reads "QYX"
    before = hashes(image)
    with open_image(image) as src:
        assert src.axes == "zyx" and "'QYX'" in src.axes_guessed and "axes='tyx'" in src.axes_guessed

    result = segment(image, CLICKS, model=tiny_ckpt, tile_size=32)
    assert "guessed from the shape (4, 60, 70)" in result.axes_guessed
    assert result.record.image["axes_guessed"] == result.axes_guessed
    assert segment(image, CLICKS, model=tiny_ckpt, tile_size=32, axes="tyx").axes_guessed is None
    assert (
        segment(write_tiff(tmp_path / "zyx.tif", stack), CLICKS, model=tiny_ckpt, tile_size=32).axes_guessed
        is None
    )

    prompts = tmp_path / "boxes.csv"
    prompts.write_text(BOXES_CSV)
    code, _, err = run(
        capsys,
        "segment",
        image,
        "--prompts",
        prompts,
        "--out",
        tmp_path / "s.tif",
        "--model",
        tiny_ckpt,
        "-q",
    )
    assert code == 0 and "napari-sam2: note: axes 'zyx' were guessed" in err
    assert "axes_guessed" in read_record(tmp_path / "s.tif").image
    assert hashes(image) == before


def test_napari_numbered_axis_labels_do_not_hide_time():
    from napari_sam2.plugin._layers import image_geometry, stack_axis_hint

    class Layer:  # what image_geometry reads of a napari 0.9 Image layer
        def __init__(self, labels):
            self.data, self.rgb, self.multiscale, self.name = np.zeros((5, 8, 8), np.uint8), False, False, "m"
            self.axis_labels = labels

    numbered = ("-3", "-2", "-1")  # napari 0.9's defaults
    assert image_geometry(Layer(("t", "y", "x")), numbered).axes == "tyx"
    assert image_geometry(Layer(numbered), ("time", "y", "x")).axes == "tyx"
    assert (
        image_geometry(Layer(numbered), numbered).axes == "zyx"
        and stack_axis_hint(Layer(numbered), numbered) is None
    )
    assert stack_axis_hint(Layer(("z", "y", "x")), ("t", "y", "x")) == "z"  # the layer's own labels first


def test_the_widget_picks_time_from_a_layers_axis_labels(qtbot):
    from napari.components import ViewerModel

    from napari_sam2.plugin._data import DataPicker

    viewer = ViewerModel()
    viewer.add_image(np.zeros((6, 8, 8), np.uint8), name="stack")  # napari 0.9 labels it "-3", "-2", "-1"
    data = DataPicker(viewer)
    qtbot.addWidget(data)
    data.refresh()
    assert data.geometry().axes == "zyx"
    viewer.add_image(np.zeros((5, 8, 8), np.uint8), name="movie", axis_labels=("t", "y", "x"))
    data.refresh()
    data.image_combo.setCurrentText("movie")
    assert data.geometry().axes == "tyx"
    data.stack_axis_combo.setCurrentText("z")  # the user's choice for this image is kept
    viewer.add_points(np.zeros((0, 3)), name="clicks")
    data.refresh()
    assert data.geometry().axes == "zyx"
