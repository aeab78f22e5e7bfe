"""Intensity windows (one per dataset), windowing of every dtype, and the model-input transform."""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from conftest import require_reference
from napari_sam2.engine.intensity import (
    CT_PRESETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    IntensityWindow,
    WindowError,
    apply_window,
    ct_window,
    foreground_window,
    resolve_window,
    robust_window,
    to_model_input,
)


@contextmanager
def strict_numerics():
    """Any numpy floating-point warning or Python warning becomes an error."""
    with np.errstate(all="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def _no_sample():
    raise AssertionError("sample() must only be called for an automatic window")


# ---------------------------------------------------------------------- IntensityWindow
def test_window_validation():
    w = IntensityWindow(np.float32(-1.5), 2)
    assert w.as_tuple() == (-1.5, 2.0)
    assert type(w.low) is float and type(w.high) is float
    assert IntensityWindow(-0.0, 1.0) == IntensityWindow(0.0, 1.0)
    assert IntensityWindow(3, 3).as_tuple() == (3.0, 3.0)
    with pytest.raises(WindowError, match=r"low .* must be <= high"):
        IntensityWindow(2, 1)
    with pytest.raises(WindowError, match="finite"):
        IntensityWindow(float("nan"), 1)
    with pytest.raises(WindowError, match="finite"):
        IntensityWindow(0, float("inf"))
    with pytest.raises(WindowError, match="numbers"):
        IntensityWindow("a", 1)
    assert issubclass(WindowError, ValueError)


# ---------------------------------------------------------------------- apply_window
@pytest.mark.parametrize(
    ("dtype", "values", "window", "expected"),
    [
        (np.uint8, [0, 10, 35, 60, 85, 110, 255], (10, 110), [0, 0, 0.25, 0.5, 0.75, 1, 1]),
        (np.uint16, [0, 1000, 1250, 1500, 2000, 65535], (1000, 2000), [0, 0, 0.25, 0.5, 1, 1]),
        (np.int16, [-32768, -100, -50, 0, 50, 100, 32767], (-100, 100), [0, 0, 0.25, 0.5, 0.75, 1, 1]),
        (np.int32, [-(2**31), -4, -2, 0, 2, 4, 2**31 - 1], (-4, 4), [0, 0, 0.25, 0.5, 0.75, 1, 1]),
        (np.float32, [-1e30, -1.0, -0.5, 0.0, 0.5, 1.0, 1e30], (-1, 1), [0, 0, 0.25, 0.5, 0.75, 1, 1]),
        (np.float64, [-1e300, -3.0, -2.0, -1.0, 1e300], (-3, -1), [0, 0, 0.5, 1, 1]),
    ],
)
def test_apply_window_dtypes(dtype, values, window, expected):
    plane = np.array(values, dtype=dtype).reshape(1, -1)
    before = plane.copy()
    with strict_numerics():
        out = apply_window(plane, IntensityWindow(*window))
    assert out.dtype == np.float32 and out.shape == plane.shape
    np.testing.assert_array_equal(out[0], np.array(expected, dtype=np.float32))
    np.testing.assert_array_equal(plane, before)  # the input is never modified


def test_apply_window_keeps_precision_of_wide_types():
    # float32 cannot tell 2**30 + 1 from 2**30; int32 and float64 are windowed in float64
    base = 2**30
    ints = np.array([base, base + 1, base + 2, base + 3, base + 4], dtype=np.int32)
    out = apply_window(ints, IntensityWindow(base, base + 4))
    np.testing.assert_array_equal(out, np.array([0, 0.25, 0.5, 0.75, 1], dtype=np.float32))
    floats = np.array([1e9, 1e9 + 0.25, 1e9 + 0.5], dtype=np.float64)
    out = apply_window(floats, IntensityWindow(1e9, 1e9 + 1))
    np.testing.assert_array_equal(out, np.array([0, 0.25, 0.5], dtype=np.float32))


def test_ct_presets_in_hounsfield_units():
    assert {name: ct_window(name).as_tuple() for name in CT_PRESETS} == {
        "soft_tissue": (-160.0, 240.0),
        "lung": (-1350.0, 150.0),
        "bone": (-500.0, 1300.0),
        "brain": (0.0, 80.0),
        "liver": (-15.0, 135.0),
    }
    hu = {
        "soft_tissue": ([-1000, -160, -60, 40, 140, 240, 3000], [0, 0, 0.25, 0.5, 0.75, 1, 1]),
        "lung": ([-3024, -1350, -975, -600, -225, 150, 1000], [0, 0, 0.25, 0.5, 0.75, 1, 1]),
        "bone": ([-1000, -500, -50, 400, 850, 1300, 3071], [0, 0, 0.25, 0.5, 0.75, 1, 1]),
        "brain": ([-1000, 0, 20, 40, 60, 80, 1000], [0, 0, 0.25, 0.5, 0.75, 1, 1]),
        "liver": ([-1000, -15, 60, 135, 300], [0, 0, 0.5, 1, 1]),
    }
    for name, (values, expected) in hu.items():
        ct = np.array(values, dtype=np.int16)  # signed CT data, negative HU included
        with strict_numerics():
            out = apply_window(ct, ct_window(f"ct:{name}"))
        np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32), err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_apply_window_nan_and_inf(dtype):
    plane = np.array([[np.nan, np.inf, -np.inf, 0.5]], dtype=dtype)
    with strict_numerics():
        out = apply_window(plane, IntensityWindow(0, 1))
        flat = apply_window(plane, IntensityWindow(0.5, 0.5))
    np.testing.assert_array_equal(out, [[0, 1, 0, 0.5]])
    np.testing.assert_array_equal(flat, [[0, 1, 0, 0]])
    huge = np.array([-np.finfo(dtype).max, np.finfo(dtype).max], dtype=dtype)
    with strict_numerics():  # (x - low) overflows to +-inf internally, which is clipped
        out = apply_window(huge, IntensityWindow(-1e30, 1e30))
    np.testing.assert_array_equal(out, [0, 1])


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32])
def test_constant_image(dtype):
    plane = np.full((8, 9), 7, dtype=dtype)
    with strict_numerics():
        window = robust_window(plane)
        assert window.as_tuple() == (7.0, 7.0)
        out = apply_window(plane, window)
        step = apply_window(np.array([5, 7, 9], dtype=dtype), window)
    np.testing.assert_array_equal(out, np.zeros((8, 9), np.float32))
    np.testing.assert_array_equal(step, np.array([0, 0, 1], np.float32))  # > low -> 1


def test_rgb_uses_one_window_for_all_channels():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 4096, size=(5, 6, 3), dtype=np.uint16)
    window = IntensityWindow(100, 3000)
    out = apply_window(rgb, window)
    assert out.shape == (5, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], apply_window(rgb[..., c], window))


def test_apply_window_rejects_non_numeric():
    with pytest.raises(WindowError, match="dtype"):
        apply_window(np.array([1 + 2j]), IntensityWindow(0, 1))
    with pytest.raises(WindowError, match="dtype"):
        apply_window(np.array(["a"]), IntensityWindow(0, 1))


# ---------------------------------------------------------------------- robust_window
def test_robust_window_ignores_a_hot_pixel_and_non_finite_values():
    rng = np.random.default_rng(1)
    data = rng.normal(1000, 50, size=(100, 100)).astype(np.float32)
    clean = robust_window(data)
    assert 800 < clean.low < 1000 < clean.high < 1200
    hot = data.copy()
    hot[3, 7] = 60000.0  # a single saturated pixel
    assert robust_window(hot).high < 1200
    assert robust_window(hot, percentiles=(0, 100)).high == 60000.0
    dirty = np.concatenate([data.ravel(), [np.nan] * 30, [np.inf, -np.inf]])
    with strict_numerics():
        assert robust_window(dirty) == clean


def test_robust_window_errors():
    for bad in (
        np.full((4, 4), np.nan),
        np.array([np.inf, -np.inf]),
        np.zeros((0,), np.float32),
        np.array([]),
    ):
        with pytest.raises(WindowError, match="no finite values"):
            robust_window(bad)
    with pytest.raises(WindowError, match="percentiles"):
        robust_window(np.arange(10), percentiles=(99, 1))
    with pytest.raises(WindowError, match="percentiles"):
        robust_window(np.arange(10), percentiles=(-1, 50))
    with pytest.raises(WindowError, match="dtype"):
        robust_window(np.array([1j, 2j]))


def test_robust_window_integer_data():
    data = np.arange(-1000, 1001, dtype=np.int16)
    w = robust_window(data, percentiles=(0, 100))
    assert w.as_tuple() == (-1000.0, 1000.0)
    assert robust_window(np.array([True, False, True]), percentiles=(0, 100)).as_tuple() == (0.0, 1.0)


# ---------------------------------------------------------------------- foreground_window
def dim_nuclei_among_bright(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fluorescence-like plane: background 20 +- 3, 39 dim nuclei (14 x 14) at 70 +- 8 and 4 bright
    ones (12 x 12) at 220 +- 10, as on the Data Science Bowl image."""
    rng = np.random.default_rng(seed)
    image = rng.normal(20, 3, (256, 256))
    dim, bright = np.zeros(image.shape, bool), np.zeros(image.shape, bool)
    for i in range(43):
        r, c = 10 + 35 * (i // 7), 10 + 35 * (i % 7)
        if i % 11 == 5:
            bright[r : r + 12, c : c + 12] = True
        else:
            dim[r : r + 14, c : c + 14] = True
    image[dim] = rng.normal(70, 8, dim.sum())
    image[bright] = rng.normal(220, 10, bright.sum())
    return image.astype(np.uint16), dim, bright


def test_foreground_window_puts_dim_nuclei_high_when_a_few_are_bright():
    image, dim, bright = dim_nuclei_among_bright()
    assert bright.mean() > 0.005 and bright.sum() < 0.1 * dim.sum()
    robust = robust_window(image)  # the 99.5th percentile lies in the bright nuclei
    assert np.median(apply_window(image[dim], robust)) < 0.3
    window = foreground_window(image)
    assert window.low == robust.low
    # the 80th percentile of the foreground: the bright nuclei are 7 % of it, so the dim ones' 86th
    # percentile, 70 + 1.08 sd = 78.6
    assert 76 < window.high < 81
    assert 0.83 < np.median(apply_window(image[dim], window)) < 0.93
    background = apply_window(image[~dim & ~bright], window)
    assert np.percentile(background, 99) < 0.25  # (20 + 2.3 sd - 12) / 66 = 0.23: it stays dark


def test_foreground_window_of_sparse_objects_lies_in_them():
    rng = np.random.default_rng(2)
    image = rng.normal(1000, 40, (64, 128, 128))
    inside = np.zeros(image.shape, bool)
    inside[30:34, 60:64, 60:64] = True  # 0.006 % of the volume
    image[inside] = rng.normal(20000, 2000, inside.sum())
    window = foreground_window(image)
    assert robust_window(image).high < 1200  # percentiles of all values: in the background
    assert 20000 < window.high < 20000 + 2 * 2000


def test_foreground_window_edge_cases():
    with strict_numerics():
        assert foreground_window(np.full((4, 4), 7.0)).as_tuple() == (7.0, 7.0)
        data = np.concatenate([np.zeros(900), np.full(100, 10.0)])
        assert foreground_window(np.concatenate([data, [np.nan, np.inf]])) == foreground_window(data)
    assert foreground_window(data).as_tuple() == (0.0, 10.0)
    assert foreground_window(data > 5).as_tuple() == (0.0, 1.0)
    with pytest.raises(WindowError, match="foreground percentile"):
        foreground_window(data, 101)
    with pytest.raises(WindowError, match="no finite values"):
        foreground_window(np.full(3, np.nan))


# ---------------------------------------------------------------------- resolve_window
def test_resolve_window_auto_uses_the_sample_lazily():
    calls = []

    def sample():
        calls.append(1)
        return np.array([0.0, 1.0, 2.0, np.nan])

    for spec in (None, "auto", " AUTO "):
        assert resolve_window(spec, sample) == robust_window(np.array([0.0, 1.0, 2.0]))
    assert len(calls) == 3
    with pytest.raises(WindowError, match="sample"):
        resolve_window("auto")


def test_resolve_window_explicit_forms():
    w = IntensityWindow(1, 2)
    assert resolve_window(w, _no_sample) is w
    assert resolve_window((10, 250), _no_sample) == IntensityWindow(10, 250)
    assert resolve_window([0.5, 99.5], _no_sample) == IntensityWindow(0.5, 99.5)  # napari contrast_limits
    assert resolve_window(np.array([-5, 5], dtype=np.int16), _no_sample) == IntensityWindow(-5, 5)
    for name in ("ct:lung", "lung", "CT:Lung"):
        assert resolve_window(name, _no_sample) == ct_window("lung") == IntensityWindow(-1350, 150)
    assert resolve_window("soft-tissue", _no_sample) == ct_window("soft_tissue")


def test_resolve_window_errors():
    with pytest.raises(
        WindowError, match=r"did you mean 'lung'.*soft_tissue, lung, bone, brain, liver.*'auto'"
    ):
        resolve_window("lungs", _no_sample)
    with pytest.raises(WindowError, match="presets: soft_tissue"):
        ct_window("xyz")
    with pytest.raises(WindowError, match="did you mean 'bone'"):
        ct_window("ct:bones")
    with pytest.raises(WindowError, match=r"\(low, high\) pair"):
        resolve_window((1, 2, 3), _no_sample)
    with pytest.raises(WindowError, match=r"\(low, high\) pair"):
        resolve_window(("a", "b"), _no_sample)
    with pytest.raises(WindowError, match="must be <= high"):
        resolve_window((5, 1), _no_sample)
    with pytest.raises(WindowError, match="finite"):
        resolve_window((0, float("nan")), _no_sample)


# ---------------------------------------------------------------------- to_model_input
MEAN = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
STD = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]


@pytest.mark.parametrize("shape", [(37, 53), (37, 53, 1), (37, 53, 3), (64, 64), (64, 64, 3), (100, 20)])
def test_to_model_input_shapes(shape):
    plane = np.random.default_rng(2).random(shape)  # float64 is accepted
    out = to_model_input(plane, 64)
    assert out.shape == (3, 64, 64) and out.dtype == torch.float32 and out.is_contiguous()
    if len(shape) == 2 or shape[2] == 1:  # grayscale is repeated to 3 channels
        gray = out * STD + MEAN
        torch.testing.assert_close(gray[0], gray[1], rtol=0, atol=1e-6)
        torch.testing.assert_close(gray[0], gray[2], rtol=0, atol=1e-6)


def test_uniform_plane_maps_to_normalised_constant():
    expected = (torch.full((3, 1, 1), 0.5) - MEAN) / STD
    exact = to_model_input(np.full((32, 32), 0.5, np.float32), 32)
    assert torch.equal(exact, expected.expand(3, 32, 32))
    resized = to_model_input(np.full((40, 70), 0.5, np.float32), 32)
    torch.testing.assert_close(resized, expected.expand(3, 32, 32), rtol=0, atol=1e-6)


@pytest.mark.parametrize("channels", [None, 3])
def test_square_plane_is_not_resampled(channels):
    shape = (48, 48) if channels is None else (48, 48, 3)
    plane = np.random.default_rng(3).random(shape, dtype=np.float32)
    chw = torch.from_numpy(plane).reshape(48, 48, -1).permute(2, 0, 1).expand(3, 48, 48)
    assert torch.equal(to_model_input(plane, 48), (chw - MEAN) / STD)  # bitwise
    assert torch.equal(to_model_input(torch.from_numpy(plane), 48), (chw - MEAN) / STD)


def test_to_model_input_errors():
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\)"):
        to_model_input(np.zeros((8, 8, 4), np.float32), 16)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\)"):
        to_model_input(np.zeros((3, 8, 8, 1), np.float32), 16)
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\)"):
        to_model_input(np.zeros((8,), np.float32), 16)
    with pytest.raises(ValueError, match="empty"):
        to_model_input(np.zeros((0, 8), np.float32), 16)
    with pytest.raises(ValueError, match="apply_window"):
        to_model_input(np.zeros((8, 8), np.uint8), 16)
    with pytest.raises(ValueError, match="image_size"):
        to_model_input(np.zeros((8, 8), np.float32), 0)


def test_window_then_model_input_of_ct_slice():
    ct = np.full((20, 30), 40, dtype=np.int16)  # soft tissue level -> mid grey
    out = to_model_input(apply_window(ct, ct_window("soft_tissue")), 20)
    torch.testing.assert_close(
        out, ((torch.full((3, 1, 1), 0.5) - MEAN) / STD).expand(3, 20, 20), rtol=0, atol=1e-6
    )


@pytest.mark.reference
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("size", [1024, 256])
def test_resize_matches_reference_transforms(size):
    require_reference()
    from sam2.utils.transforms import SAM2Transforms

    image = np.random.default_rng(4).random((300, 500, 3), dtype=np.float32)
    ref = SAM2Transforms(resolution=size, mask_threshold=0)(image)  # ToTensor keeps float values
    ours = to_model_input(image, size)
    assert ref.shape == ours.shape == (3, size, size)
    # identical under ATEN_CPU_CAPABILITY=avx512, avx2 and default (measured); values reach 2.6,
    # where one float32 unit in the last place is 2.4e-7: 1e-5 allows ~40 of them, for resampling
    # kernels elsewhere that sum in another order
    assert (ours - ref).abs().max().item() <= 1e-5
    gray = image[..., 0]
    ref_gray = SAM2Transforms(resolution=size, mask_threshold=0)(np.repeat(gray[..., None], 3, axis=2))
    assert (to_model_input(gray, size) - ref_gray).abs().max().item() <= 1e-5
