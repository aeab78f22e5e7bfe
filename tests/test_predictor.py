"""Image predictor: untiled = SAM2's own path; tiled planes give whole objects without seams."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from flood_backend import FloodFillBackend
from helpers import iou
from napari_sam2.engine.intensity import apply_window, to_model_input
from napari_sam2.engine.predictor import ImagePredictor, PredictorError
from napari_sam2.engine.prompts import Prompt, PromptError
from napari_sam2.model import VARIANTS, Sam2Model
from napari_sam2.model._layers import resize_bilinear


def disc(hw, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[: hw[0], : hw[1]]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def plane_with(*masks, hw) -> np.ndarray:
    img = np.full(hw, 200, dtype=np.uint16)
    for m in masks:
        img[m] = 3000
    return img


@pytest.fixture
def flood():
    return FloodFillBackend(image_size=128)


def test_untiled_plane_equals_the_plain_model_path():
    torch.manual_seed(0)
    model = Sam2Model(replace(VARIANTS["sam2.1_hiera_tiny"], name="t128", image_size=128)).eval()
    rng = np.random.default_rng(0)
    plane = rng.integers(0, 4096, size=(100, 120)).astype(np.uint16)
    pred = ImagePredictor(model)
    pred.set_image(plane, window=(0, 4095))
    out = pred.predict(Prompt(points=[[40, 70]], labels=[1]), multimask=True)
    assert pred.grid.untiled and out.logits.shape[0] == 3 and out.logits.dtype == np.float32

    with torch.inference_mode():
        x = to_model_input(apply_window(plane, pred.window), 128)
        feats = model.encode_image(x[None])
        coords = torch.tensor([[[70 / 120 * 128, 40 / 100 * 128]]])  # (x, y) in model pixels
        dec = model.decode(model.embed_without_memory(feats), feats.high_res, coords, torch.tensor([[1]]))
        logits = resize_bilinear(dec.masks, (100, 120))[0].numpy()  # (3, H, W)
    expected = logits > 0
    assert np.array_equal(np.stack([out.full(k) for k in range(3)]), expected)
    np.testing.assert_allclose(out.scores, dec.iou[0].numpy(), atol=1e-6)
    assert 0 < expected[0].sum() < expected[0].size  # a real mask, so equality means something
    # the prediction covers only the box (row0, col0, row1, col1) of the candidates' masks ...
    rows, cols = np.nonzero(expected.any(axis=0))
    r0, c0, r1, c1 = out.bbox
    assert out.bbox == (rows.min(), cols.min(), rows.max() + 1, cols.max() + 1)
    np.testing.assert_allclose(out.logits, logits[:, r0:r1, c0:c1], atol=1e-5)
    # ... and each candidate's patch covers its own mask's box, with the same logits
    for k in range(3):
        patch = out.patch(k)
        rows, cols = np.nonzero(expected[k])
        assert patch.origin == (rows.min(), cols.min())
        assert patch.logits.shape == (rows.max() + 1 - rows.min(), cols.max() + 1 - cols.min())
        np.testing.assert_array_equal(patch.full((100, 120)) > 0, expected[k])


@pytest.mark.parametrize("click", [(150, 150), (100, 105), (200, 195)])
def test_object_spanning_four_tiles_comes_out_whole(flood, click):
    hw = (300, 300)
    truth = disc(hw, (150, 150), 80)
    pred = ImagePredictor(flood, overlap=32)
    pred.set_image(plane_with(truth, hw=hw))
    assert len(pred.grid.tiles) == 9 and not pred.grid.untiled
    out = pred.predict(Prompt(points=[click], labels=[1]))
    mask = out.full()
    assert len(out.tiles) >= 4
    assert iou(mask, truth) > 0.97
    assert ndimage.label(mask)[1] == 1  # one piece: no seam

    clipped = ImagePredictor(flood, overlap=32, max_tiles=1)
    clipped.set_image(plane_with(truth, hw=hw))
    assert (
        iou(clipped.predict(Prompt(points=[click], labels=[1])).full(), truth) < 0.9
    )  # what stitching fixes


def test_long_object_across_many_tiles_and_edge_tiles(flood):
    hw = (260, 700)
    bar = np.zeros(hw, bool)
    bar[200:240, 20:690] = True  # along the bottom edge, into the shifted last column of tiles
    other = disc(hw, (60, 350), 30)
    pred = ImagePredictor(flood, overlap=32)
    pred.set_image(plane_with(bar, other, hw=hw))
    mask = pred.predict(Prompt(points=[[220, 40]], labels=[1])).full()
    assert iou(mask, bar) > 0.97 and not (mask & other).any()


def test_box_larger_than_a_tile(flood):
    hw = (400, 400)
    truth = disc(hw, (200, 200), 150)
    pred = ImagePredictor(flood, overlap=32)
    pred.set_image(plane_with(truth, hw=hw))
    out = pred.predict(Prompt(box=(45, 45, 355, 355)))
    assert iou(out.full(), truth) > 0.97


def test_negative_click_and_neighbouring_objects(flood):
    hw = (300, 300)
    a, b = disc(hw, (100, 100), 40), disc(hw, (100, 200), 40)
    pred = ImagePredictor(flood, overlap=32)
    pred.set_image(plane_with(a, b, hw=hw))
    mask = pred.predict(Prompt(points=[[100, 100]], labels=[1])).full()
    assert iou(mask, a) > 0.95 and not (mask & b).any()
    both = pred.predict(Prompt(points=[[100, 100], [100, 200]], labels=[1, 1])).full()
    assert iou(both, a | b) > 0.95
    none = pred.predict(Prompt(points=[[100, 100], [100, 101]], labels=[1, 0])).full()
    assert none.sum() == 0


def test_mask_input_alone_and_previous_prediction(flood):
    hw = (300, 300)
    truth = disc(hw, (150, 150), 80)
    pred = ImagePredictor(flood, overlap=32)
    pred.set_image(plane_with(truth, hw=hw))
    first = pred.predict(Prompt(points=[[150, 150]], labels=[1]))
    again = pred.predict(mask_input=first)
    assert iou(again.full(), truth) > 0.97
    seed = np.zeros(hw, bool)
    seed[140:160, 140:160] = True
    assert iou(pred.predict(mask_input=seed).full(), truth) > 0.97


def test_encode_all_progress_cancel_and_cache(flood):
    hw = (300, 300)
    plane = plane_with(disc(hw, (150, 150), 80), hw=hw)
    pred = ImagePredictor(flood, overlap=32)
    pred.set_image(plane)
    calls = []
    with pytest.raises(PredictorError, match="cancelled after 2 of 9"):
        pred.encode_all(progress=lambda d, t: calls.append((d, t)), cancel=lambda: len(calls) >= 2)
    assert calls == [(1, 9), (2, 9)] and flood.encodes == 2
    assert pred.encode_all() == 9 and flood.encodes == 9  # the two finished tiles were kept
    pred.predict(Prompt(points=[[150, 150]], labels=[1]))
    assert flood.encodes == 9  # decoding reuses cached embeddings
    calls.clear()
    pred.predict(Prompt(points=[[150, 150]], labels=[1]), progress=lambda d, t: calls.append((d, t)))
    assert [d for d, _ in calls] == list(range(1, len(calls) + 1)) and len(calls) >= 4
    assert all(d <= t for d, t in calls)
    seen = []
    with pytest.raises(PredictorError, match="cancelled after 2 tiles"):
        pred.predict(
            Prompt(points=[[150, 150]], labels=[1]),
            progress=lambda d, t: seen.append(d),
            cancel=lambda: len(seen) >= 2,
        )
    assert seen == [1, 2]
    pred.set_image(plane, window=(0, 5000))  # another intensity window: other embeddings
    pred.predict(Prompt(points=[[150, 150]], labels=[1]))
    assert flood.encodes > 9


def test_errors(flood):
    pred = ImagePredictor(flood)
    with pytest.raises(PredictorError, match="set_image"):
        pred.predict(Prompt(points=[[1, 1]], labels=[1]))
    pred.set_image(np.zeros((4, 50, 60), np.uint8), frame=(2,))
    with pytest.raises(PromptError, match="outside the 50 x 60 plane"):
        pred.predict(Prompt(points=[[55, 1]], labels=[1]))
    with pytest.raises(PromptError, match="needs a prompt"):
        pred.predict()
    with pytest.raises(PromptError, match="frame index"):
        pred.set_image(np.zeros((4, 50, 60), np.uint8), frame=(4,))
    with pytest.raises(PromptError, match="mask_input has shape"):
        pred.predict(mask_input=np.zeros((5, 5), bool))


@pytest.mark.slow
def test_two_gigabyte_zarr_plane_with_bounded_memory(tmp_path):
    """A 32768 x 32768 uint16 zarr plane (2 GiB): window, tiles and a prediction on demand."""
    script = textwrap.dedent(
        f"""
        import resource, sys, numpy as np, zarr
        sys.path.insert(0, {str(tmp_path.parent.parent)!r})
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        from flood_backend import FloodFillBackend
        from napari_sam2.engine.predictor import ImagePredictor
        from napari_sam2.engine.prompts import Prompt
        z = zarr.create_array({str(tmp_path / "big.zarr")!r}, shape=(32768, 32768), chunks=(1024, 1024),
                              dtype="uint16", fill_value=100)
        yy, xx = np.mgrid[:2048, :2048]
        block = np.where((yy - 1024) ** 2 + (xx - 1024) ** 2 < 600 ** 2, 3000, 100).astype("uint16")
        z[15000:17048, 15000:17048] = block
        pred = ImagePredictor(FloodFillBackend(1024), overlap=256)
        pred.set_image(z, window=(0, 3000))
        out = pred.predict(Prompt(points=[[16024, 16024]], labels=[1]))
        area = int(out.masks[0].sum())
        # VmHWM: peak RSS of this process image (ru_maxrss would include pytest's, kept across exec)
        status = open("/proc/self/status").read() if sys.platform == "linux" else ""
        hwm = [int(l.split()[1]) for l in status.splitlines() if l.startswith("VmHWM:")]
        peak_kib = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(area, len(out.tiles), peak_kib // 1024)
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    area, tiles, peak_mib = (int(v) for v in res.stdout.split())
    assert abs(area - np.pi * 600**2) / (np.pi * 600**2) < 0.02  # the whole object, across tiles
    assert tiles >= 4
    assert peak_mib < 1500, f"peak RSS {peak_mib} MiB for a 2 GiB plane"
