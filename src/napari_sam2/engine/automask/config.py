"""Parameters of the automatic mask generator (SAM2's defaults), checked with errors that name
the bad value and the allowed range."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np


class AutoMaskError(ValueError):
    """A generator parameter or an input that cannot be used; the message names it and what to pass."""


class AutoMaskCancelled(RuntimeError):
    """:func:`generate_masks` was stopped by its ``cancel`` callback."""


def _check(name: str, value: Any, low: float, high: float, *, integer: bool, low_open: bool = False) -> None:
    kind = "an int" if integer else "a number"
    ok_type = (
        isinstance(value, int | np.integer) if integer else isinstance(value, int | float | np.number)
    ) and not isinstance(value, bool)
    if ok_type and math.isfinite(float(value)):
        too_low = value <= low if low_open else value < low
        if not too_low and value <= high:
            return
    lo = f"({low:g}" if low_open else f"[{low:g}"
    hi = "inf)" if math.isinf(high) else f"{high:g}]"
    raise AutoMaskError(f"{name} must be {kind} in {lo}, {hi}; got {value!r}")


DEMO_FILTERS = {"pred_iou_thresh": 0.7, "stability_score_thresh": 0.9}
"""Filter thresholds for the small demo model. Its predicted IoUs and stability scores run lower
than the official models' for masks of the same quality, so SAM2's 0.8 / 0.95 keep too few masks
(instance F1 0.4-0.67 on held-out generated stacks, against 0.83 with these; docs/automatic.md)."""


@dataclass(frozen=True)
class AutoMaskConfig:
    """Parameters of the automatic mask generator; the defaults are SAM2's.

    Attributes:
        points_per_side: clicks per side of the grid over one model input (a whole plane, crop or
            tile); ``points_per_side ** 2`` clicks in all.
        points_per_batch: clicks decoded together (memory vs speed only; results do not change).
        pred_iou_thresh: keep masks whose predicted IoU is above this (0 disables the filter).
        stability_score_thresh: keep masks whose stability score is at least this (0 disables).
        stability_score_offset: the logit offset for the stability score.
        mask_threshold: logit above which a pixel is inside.
        box_nms_thresh: box IoU above which the lower-scoring of two masks is dropped.
        crop_n_layers: extra layers of crops (layer i: 2^i x 2^i crops) on planes that fit the
            model input; must be 0 for tiled planes (tiles are already at native resolution).
        crop_nms_thresh: box IoU for removing duplicates between crops (smaller crops win).
        crop_overlap_ratio: overlap of first-layer crops as a fraction of the plane's short side.
        crop_n_points_downscale_factor: layer i uses ``points_per_side / factor ** i`` clicks per side.
        min_mask_region_area: fill holes and remove specks of at most this many pixels of the
            decoder's low-resolution output (a quarter of the input size per side), before
            upsampling, as SAM2 does; 0 disables.
        use_m2m: refine each mask once with its own logits as a mask prompt.
        multimask_output: three masks per click (whole, part, subpart) instead of one.
    """

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.8
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    mask_threshold: float = 0.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_nms_thresh: float = 0.7
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0
    use_m2m: bool = False
    multimask_output: bool = True

    def __post_init__(self) -> None:
        inf = math.inf
        _check("points_per_side", self.points_per_side, 1, 1024, integer=True)
        _check("points_per_batch", self.points_per_batch, 1, 4096, integer=True)
        _check("pred_iou_thresh", self.pred_iou_thresh, 0, 1, integer=False)
        _check("stability_score_thresh", self.stability_score_thresh, 0, 1, integer=False)
        _check("stability_score_offset", self.stability_score_offset, 0, inf, integer=False)
        _check("mask_threshold", self.mask_threshold, -inf, inf, integer=False)
        _check("box_nms_thresh", self.box_nms_thresh, 0, 1, integer=False, low_open=True)
        _check("crop_n_layers", self.crop_n_layers, 0, 4, integer=True)
        _check("crop_nms_thresh", self.crop_nms_thresh, 0, 1, integer=False, low_open=True)
        _check("crop_overlap_ratio", self.crop_overlap_ratio, 0, 0.99, integer=False)
        _check("crop_n_points_downscale_factor", self.crop_n_points_downscale_factor, 1, 64, integer=True)
        _check("min_mask_region_area", self.min_mask_region_area, 0, inf, integer=True)
        for name in ("use_m2m", "multimask_output"):
            if not isinstance(getattr(self, name), bool):
                raise AutoMaskError(f"{name} must be True or False; got {getattr(self, name)!r}")
        for layer in range(self.crop_n_layers + 1):
            if self.points_per_side // self.crop_n_points_downscale_factor**layer < 1:
                raise AutoMaskError(
                    f"crop layer {layer} would get no clicks: points_per_side={self.points_per_side} / "
                    f"crop_n_points_downscale_factor={self.crop_n_points_downscale_factor}**{layer} < 1; "
                    "use fewer crop layers or a smaller downscale factor"
                )

    @classmethod
    def for_model(cls, model: Any) -> AutoMaskConfig:
        """The defaults for ``model`` (a Sam2Model, a predictor backend or an ImagePredictor):
        SAM2's, except for the demo model, whose filters use :data:`DEMO_FILTERS`."""
        backend = getattr(model, "backend", model)
        name = getattr(getattr(backend, "config", None), "name", None)
        if name is None:
            name = str(getattr(backend, "model_id", "")).split(":")[0]
        return cls(**DEMO_FILTERS) if name == "demo" else cls()

    @classmethod
    def build(cls, config: AutoMaskConfig | None = None, model: Any = None, **options: Any) -> AutoMaskConfig:
        """``config`` (default: :meth:`for_model` of ``model``, SAM2's without one) with
        ``options`` replaced, checking their names."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - names)
        if unknown:
            raise AutoMaskError(
                f"unknown generator option(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
            )
        if config is not None and not isinstance(config, cls):
            raise AutoMaskError(f"config must be an AutoMaskConfig, got {type(config).__name__}")
        return replace(config or (cls.for_model(model) if model is not None else cls()), **options)
