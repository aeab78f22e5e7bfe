"""One intensity window per dataset, and the step from a windowed plane to the model's input.

Raw data (uint8, uint16, int16 Hounsfield units, float, ...) is mapped to [0, 1] by a single
:class:`IntensityWindow` chosen once for the whole image or volume: robust percentiles of a sample,
the layer's contrast limits, or a CT preset. Every plane and every tile goes through the same window,
so a tile's intensities never depend on its neighbours (no per-tile min-max).

The [0, 1] plane then becomes SAM2's input with :func:`to_model_input`: resized to the model's square
input size and normalised with the ImageNet mean and standard deviation, as Meta's reference does.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CT_PRESETS",
    "DATASET_PERCENTILES",
    "FOREGROUND_PERCENTILE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IntensityWindow",
    "WindowError",
    "apply_window",
    "ct_window",
    "dataset_window",
    "foreground_window",
    "resolve_window",
    "robust_window",
    "to_model_input",
]

# CT presets in Hounsfield units as (level, width); the window is [level - width/2, level + width/2].
# Sources: Radiopaedia, "Windowing (CT)" (https://radiopaedia.org/articles/windowing-ct) lists
# brain W:80 L:40, lungs W:1500 L:-600, bones W:1800 L:400, abdominal soft tissue W:400 L:50;
# radiology.expert, "Hounsfield units" (https://radiology.expert/x-ray-ct-technique/ct/hounsfield-units/)
# gives the common soft-tissue setting W:400 L:40. For the liver, references give W:150 with levels
# from 30 (Radiopaedia) to 60; we use L:60, the level common in liver-segmentation preprocessing,
# which suits contrast-enhanced (portal venous) parenchyma.
CT_PRESETS: MappingProxyType[str, tuple[float, float]] = MappingProxyType(
    {
        "soft_tissue": (40.0, 400.0),
        "lung": (-600.0, 1500.0),
        "bone": (400.0, 1800.0),
        "brain": (40.0, 80.0),
        "liver": (60.0, 150.0),
    }
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""Per-channel (R, G, B) normalisation SAM2 was trained with."""

_CT_PREFIX = "ct:"
_AUTO = "auto"
# float32 holds every integer of these types exactly; anything wider is windowed in float64.
_FLOAT32_EXACT = {
    np.dtype(t) for t in (np.bool_, np.uint8, np.int8, np.uint16, np.int16, np.float16, np.float32)
}


class WindowError(ValueError):
    """An intensity window that cannot be built or used: unknown preset, low > high, no finite data."""


@dataclass(frozen=True)
class IntensityWindow:
    """Data values ``low`` and ``high`` mapped to 0 and 1 (in the data's units, e.g. HU or counts).

    ``low == high`` is allowed (a constant image): :func:`apply_window` then thresholds at ``low``.
    """

    low: float
    high: float

    def __post_init__(self) -> None:
        try:
            low, high = float(self.low), float(self.high)
        except (TypeError, ValueError) as err:
            raise WindowError(f"window bounds must be numbers, got ({self.low!r}, {self.high!r})") from err
        if not (math.isfinite(low) and math.isfinite(high)):
            raise WindowError(f"window bounds must be finite, got ({low}, {high})")
        if low > high:
            raise WindowError(f"window low ({low}) must be <= high ({high}); give the bounds as (low, high)")
        # + 0.0 turns -0.0 into 0.0 so that equal windows have equal cache keys
        object.__setattr__(self, "low", low + 0.0)
        object.__setattr__(self, "high", high + 0.0)

    def as_tuple(self) -> tuple[float, float]:
        return (self.low, self.high)


def robust_window(values: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> IntensityWindow:
    """Window from two percentiles of the finite values (NaN and +-inf ignored).

    Args:
        values: any-shape real array, typically a sample of planes of the whole dataset.
        percentiles: (low, high) in [0, 100]; the defaults ignore a few hot or dead pixels.

    Raises:
        WindowError: no finite value, a non-real dtype, or invalid percentiles.
    """
    p_low, p_high = (float(p) for p in percentiles)
    if not 0.0 <= p_low <= p_high <= 100.0:
        raise WindowError(f"percentiles must satisfy 0 <= low <= high <= 100, got {percentiles!r}")
    values = np.asarray(values)
    if values.dtype == np.bool_:
        values = values.view(np.uint8)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise WindowError(f"cannot compute an intensity window for data of dtype {values.dtype}")
    if np.issubdtype(values.dtype, np.floating):
        finite = np.isfinite(values)
        if not finite.all():
            values = values[finite]
    if values.size == 0:
        raise WindowError(
            "cannot compute an intensity window: the data has no finite values (empty or all NaN/inf); "
            "give an explicit window (low, high) or a CT preset instead"
        )
    low, high = np.percentile(values, [p_low, p_high])
    return IntensityWindow(float(low), float(high))


DATASET_PERCENTILES = (0.5, 99.99)
"""The percentiles of :func:`dataset_window`: 1 value in 10,000 may be brighter than its top (hot
pixels), so objects that cover a few per mille of a volume still set it."""


def dataset_window(values: np.ndarray) -> IntensityWindow:
    """One window for a whole dataset that keeps sparse bright objects below saturation.

    :func:`robust_window`'s 99.5th percentile lies in the background when the objects cover less
    than 0.5 % of the data (a few bright nuclei in a dim volume), so every object maps to 1 and
    loses its inner structure. This window's top is the 99.99th percentile of ``values``
    (:data:`DATASET_PERCENTILES`), the bottom the 0.5th: still blind to a few hot or dead pixels.

    Args:
        values: any-shape real array, typically ``ImageSource.sample_values()`` of the whole dataset.

    Raises:
        WindowError: as :func:`robust_window`.
    """
    return robust_window(values, DATASET_PERCENTILES)


FOREGROUND_PERCENTILE = 80.0
"""The percentile of the foreground values (above Otsu's threshold) at the top of
:func:`foreground_window`."""


def foreground_window(values: np.ndarray, percentile: float = FOREGROUND_PERCENTILE) -> IntensityWindow:
    """One window for a whole dataset whose top is set by the objects, not by the brightest few.

    The bottom is the 0.5th percentile of ``values``; the top the ``percentile``-th percentile of the
    values above Otsu's threshold (the foreground). A few very bright objects among dim ones (a
    common sight in fluorescence) then no longer push the dim ones to the bottom of the window, and
    sparse objects still set the top (a percentile of all values would lie in the background). Data
    with no two levels (constant) falls back to :func:`robust_window`.

    Args:
        values: any-shape real array, typically ``ImageSource.sample_values()`` of the whole dataset.
        percentile: of the foreground values, in [0, 100].

    Raises:
        WindowError: as :func:`robust_window`, or a percentile outside [0, 100].
    """
    from skimage.filters import threshold_otsu

    if not 0.0 <= float(percentile) <= 100.0:
        raise WindowError(f"the foreground percentile must be in [0, 100], got {percentile!r}")
    robust = robust_window(values)  # checks dtype and finiteness
    values = np.asarray(values)
    values = values.view(np.uint8) if values.dtype == np.bool_ else values
    values = values[np.isfinite(values)] if values.dtype.kind == "f" else values.ravel()
    if values.min() == values.max():
        return robust
    foreground = values[values > threshold_otsu(values)]
    high = float(np.percentile(foreground, percentile)) if foreground.size else robust.high
    return IntensityWindow(robust.low, max(high, robust.low))


def _preset_name(name: str) -> str:
    key = name.strip().lower()
    if key.startswith(_CT_PREFIX):
        key = key[len(_CT_PREFIX) :]
    return key.replace("-", "_").replace(" ", "_")


def ct_window(name: str) -> IntensityWindow:
    """The CT preset ``name`` ("lung" or "ct:lung", any case) as a window in Hounsfield units.

    Raises:
        WindowError: unknown name, with the closest preset and the list of presets.
    """
    key = _preset_name(name)
    if key not in CT_PRESETS:
        close = difflib.get_close_matches(key, list(CT_PRESETS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise WindowError(f"unknown CT window {name!r}{hint}; presets: {', '.join(CT_PRESETS)}")
    level, width = CT_PRESETS[key]
    return IntensityWindow(level - width / 2, level + width / 2)


def resolve_window(
    window: IntensityWindow | Sequence[float] | str | None,
    sample: Callable[[], np.ndarray] | None = None,
) -> IntensityWindow:
    """Turn what a user or the GUI gives into an :class:`IntensityWindow`.

    Args:
        window: None or "auto" (robust percentiles of ``sample()``), a (low, high) pair such as
            napari contrast limits, an IntensityWindow, or a CT preset name ("ct:lung" or "lung").
        sample: called only for "auto"; returns values representative of the whole dataset.

    Raises:
        WindowError: for anything else, or for "auto" without a sample.
    """
    if isinstance(window, IntensityWindow):
        return window
    if window is None or (isinstance(window, str) and window.strip().lower() == _AUTO):
        if sample is None:
            raise WindowError("an automatic window needs a sample of the data; pass sample=...")
        return robust_window(sample())
    if isinstance(window, str):
        try:
            return ct_window(window)
        except WindowError as err:
            raise WindowError(f"{err}, or 'auto'") from None
    pair = np.asarray(window)
    if pair.shape != (2,) or not (
        np.issubdtype(pair.dtype, np.integer) or np.issubdtype(pair.dtype, np.floating)
    ):
        raise WindowError(
            f"a window is None/'auto', a (low, high) pair of numbers, an IntensityWindow or a CT preset "
            f"name, got {window!r}"
        )
    return IntensityWindow(float(pair[0]), float(pair[1]))


def apply_window(plane: np.ndarray, window: IntensityWindow) -> np.ndarray:
    """Map data values to float32 in [0, 1]: ``(x - low) / (high - low)``, clipped.

    Works elementwise on any shape ((H, W), (H, W, 3) RGB with one window for all channels, tiles,
    volumes) and any real dtype, negative values included. Integers wider than 16 bits and float64
    are computed in float64 so that no precision is lost before the final float32.

    Special values: NaN -> 0, +inf -> 1, -inf -> 0. When ``low == high`` (a constant image) there is
    no slope: values > low map to 1, all others (and NaN) to 0, without dividing by zero.
    """
    plane = np.asarray(plane)
    if not (plane.dtype == np.bool_ or np.issubdtype(plane.dtype, np.number)) or np.iscomplexobj(plane):
        raise WindowError(f"cannot window data of dtype {plane.dtype}; expected a real numeric array")
    low, high = window.low, window.high
    if low == high:
        return np.greater(plane, low).astype(np.float32)
    work = np.float32 if plane.dtype in _FLOAT32_EXACT else np.float64
    # over/invalid: huge finite values may overflow to +-inf, which the clip maps to 1/0
    with np.errstate(over="ignore", invalid="ignore"):
        out = np.subtract(plane, work(low), dtype=work)
        out /= work(high - low)
        np.clip(out, 0.0, 1.0, out=out)
    np.copyto(out, 0.0, where=np.isnan(out))
    return out.astype(np.float32, copy=False)


def to_model_input(
    plane01: np.ndarray | torch.Tensor, image_size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """A windowed plane -> SAM2's normalised input image.

    Args:
        plane01: (H, W) grayscale or (H, W, 3) RGB, floating point in [0, 1] (from :func:`apply_window`).
        image_size: the model's square input size S (``config.image_size``).
        device: where to resize and return the tensor (default CPU).

    Returns:
        (3, S, S) float32: grayscale repeated to 3 channels, resized with antialiased bilinear
        interpolation (align_corners=False) only when (H, W) != (S, S), then normalised per channel
        with :data:`IMAGENET_MEAN` / :data:`IMAGENET_STD`. This equals the reference's torchvision
        ``Resize`` + ``Normalize`` on float tensors.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if isinstance(plane01, torch.Tensor):
        dtype_ok, dtype = plane01.is_floating_point(), plane01.dtype
    else:
        plane01 = np.asarray(plane01)
        dtype_ok, dtype = np.issubdtype(plane01.dtype, np.floating), plane01.dtype
    shape = tuple(plane01.shape)
    if not (len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3))):
        raise ValueError(
            f"expected a (H, W) or (H, W, 3) plane, got shape {shape}; pick one plane of a volume, "
            "and convert other channel counts to grayscale or RGB first"
        )
    if 0 in shape[:2]:
        raise ValueError(f"the plane is empty: shape {shape}")
    if not dtype_ok:
        raise ValueError(f"expected floats in [0, 1] (from apply_window), got dtype {dtype}")

    if isinstance(plane01, torch.Tensor):
        t = plane01.to(device=device, dtype=torch.float32)
    else:
        t = torch.from_numpy(np.ascontiguousarray(plane01, dtype=np.float32)).to(device)
    t = t.reshape(shape[0], shape[1], -1).permute(2, 0, 1)  # (H, W, c) -> (c, H, W), c = 1 or 3
    if shape[:2] != (image_size, image_size):
        # a grayscale plane is resized once, then repeated: same result as resizing 3 equal channels
        t = F.interpolate(
            t[None], size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True
        )[0]
    t = t.expand(3, image_size, image_size)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=t.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=t.device)[:, None, None]
    return ((t - mean) / std).contiguous()  # (3, S, S)
