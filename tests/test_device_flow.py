"""Tensors stay on the model's device from the image encoder to the mask decoder.

The click path (set the plane, encode or take the embedding from the cache, decode, write labels)
and a propagation run under a device check: on a CPU-only machine the model pretends to live on an
accelerator (:class:`helpers.fake_accelerator.FakeAccelerator`), which raises as CUDA does on any
operation that mixes the model's tensors with tensors brought back to the host; with
``NAPARI_SAM2_TEST_DEVICE=cuda`` (benchmarks/gpu_check.py) the same paths also run on the real
device, every operation's tensor arguments recorded and checked to share one device.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

from conftest import TEST_DEVICE
from helpers.builders import make_model
from helpers.fake_accelerator import FakeAccelerator
from napari_sam2.api.session import RecordingWriter, propagate, segment_plane
from napari_sam2.engine import EmbeddingCache, ImagePredictor, LabelWriter, Prompt, open_image
from napari_sam2.model import ImageFeatures, Sam2Model

WINDOW = (0.0, 255.0)


def disc_stack(planes: int = 3, hw: tuple[int, int] = (64, 150)) -> np.ndarray:
    """(planes, H, W) uint8: a bright disc drifting right on a dark background."""
    rows, cols = np.mgrid[: hw[0], : hw[1]]
    out = np.full((planes, *hw), 20, np.uint8)
    for z in range(planes):
        out[z][(rows - 32) ** 2 + (cols - 40 - 2 * z) ** 2 < 12**2] = 220
    return out


CLICK = Prompt(points=[[32, 40]], labels=[1])


def click_path(model, image, cache: EmbeddingCache | None = None) -> list[np.ndarray]:
    """Two clicks on plane 1 (the second from the cache) and their labels, as the widget does."""
    predictor = ImagePredictor(model, cache=cache)
    source = open_image(image)
    labels = np.zeros(image.shape, np.uint32)
    out = []
    for obj, prompt in ((1, CLICK), (2, Prompt(points=[[32, 40], [32, 60]], labels=[1, 0]))):
        patch = segment_plane(predictor, source, (1,), prompt, WINDOW)
        LabelWriter(labels).write((1,), {obj: patch})
        out.append(labels.copy())
    return out


def propagation(model, image) -> np.ndarray:
    labels = np.zeros(image.shape, np.uint32)
    propagate(
        model, open_image(image), RecordingWriter(labels), 1, axis="z", prompts={1: CLICK}, window=WINDOW
    )
    return labels


@pytest.fixture(scope="module")
def model() -> Sam2Model:
    return make_model(seed=3)


def test_the_check_fails_when_features_come_back_to_the_host(model):
    """The fake accelerator is strict enough: features moved to the CPU and handed back to the
    model unmoved (what the predictor did before) raise, as on CUDA."""
    with FakeAccelerator.on(model, Sam2Model) as device, torch.inference_mode():
        feats = model.encode_image(torch.zeros(1, 3, 64, 64).to(model.device))
        host = ImageFeatures(feats.embed.cpu(), feats.pos.cpu(), tuple(f.cpu() for f in feats.high_res))
        with pytest.raises(RuntimeError, match="same device"):
            model.embed_without_memory(host)
        coords, labels = torch.tensor([[[10.0, 10.0]]]), torch.tensor([[1]])
        with pytest.raises(RuntimeError, match="same device"):  # prompts not moved to the model
            model.decode(model.embed_without_memory(feats), feats.high_res, coords, labels)
        with pytest.raises(TypeError, match="numpy"):
            feats.embed.numpy()
    assert len(device.violations) == 3


@pytest.mark.parametrize("plane_hw", [(64, 64), (64, 150)], ids=["untiled", "tiled"])
def test_click_path_keeps_the_model_on_one_device(model, plane_hw, tmp_path):
    image = disc_stack(hw=plane_hw)
    expected = click_path(model, image)
    assert (expected[0][1] == 1).sum() > 50  # a real mask, so equality below means something
    with FakeAccelerator.on(model, Sam2Model) as device:
        got = click_path(model, image)
        # a fresh predictor over a disk cache: the features come from the CPU copy on disk
        disk = EmbeddingCache(directory=tmp_path)
        click_path(model, image, disk)
        from_disk = click_path(model, image, EmbeddingCache(directory=tmp_path))
    assert device.violations == [] and device.accel_ops > 100
    for a, b, c in zip(expected, got, from_disk):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_propagation_keeps_the_model_on_one_device(model):
    image = disc_stack()
    expected = propagation(model, image)
    assert all((expected[z] == 1).sum() > 50 for z in range(3))
    with FakeAccelerator.on(model, Sam2Model) as device:
        got = propagation(model, image)
    assert device.violations == [] and device.accel_ops > 100
    np.testing.assert_array_equal(got, expected)


class DeviceRecorder(TorchFunctionMode):
    """Records the set of devices of the tensor arguments of every operation."""

    def __init__(self) -> None:
        super().__init__()
        self.mixed: list[str] = []
        self.devices: set[torch.device] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        flat, _ = tree_flatten((args, kwargs or {}))
        devs = {t.device for t in flat if isinstance(t, torch.Tensor) and t.dim() > 0}
        if len(devs) > 1 and func not in (torch.Tensor.copy_, torch.Tensor.__setitem__, torch.Tensor.to):
            self.mixed.append(f"{getattr(func, '__name__', func)}: {sorted(map(str, devs))}")
        self.devices |= devs
        return func(*args, **(kwargs or {}))


@pytest.mark.skipif(TEST_DEVICE.type == "cpu", reason="needs NAPARI_SAM2_TEST_DEVICE set to an accelerator")
def test_real_device_click_and_propagation():
    model = make_model(seed=3).to(TEST_DEVICE)
    image = disc_stack()
    with DeviceRecorder() as rec:
        clicks = click_path(model, image)
        labels = propagation(model, image)
    assert rec.mixed == [] and any(d.type == TEST_DEVICE.type for d in rec.devices)
    cpu = make_model(seed=3)
    inter = np.logical_and(clicks[0][1] == 1, click_path(cpu, image)[0][1] == 1).sum()
    assert inter / max(1, (clicks[0][1] == 1).sum()) > 0.95
    assert all((labels[z] == 1).sum() > 50 for z in range(3))
