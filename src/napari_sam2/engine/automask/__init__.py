"""Segment everything: SAM2's automatic mask generator for planes of any size, stacks and time-lapses.

Two entry points:

* :func:`generate_masks` finds candidate masks on one plane with SAM2's algorithm (a grid of
  single-click prompts decoded in batches, predicted-IoU and stability filters, box non-maximum
  suppression, optional crop layers and mask-to-mask refinement). A plane that fits the model
  input is processed exactly like Meta's ``SAM2AutomaticMaskGenerator`` (same masks for the same
  weights); a larger plane is processed tile by tile at native resolution and objects cut by tile
  seams are followed across them (see :mod:`._automask_tiles`).
* :func:`segment_everything` turns that into instance labels: one label image for a plane, or,
  for a (z, y, x) / (t, y, x) stack, instances found on seed frames and carried through the stack
  by the propagation :class:`~.tracker.Tracker` with consistent ids (see :mod:`._automask_volume`).

Small-region removal and hole filling (``min_mask_region_area``) run on the CPU with
scipy; Meta's generator needs a CUDA extension for them and skips them without it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from ...model import Sam2Model
from ..cache import EmbeddingCache
from ..frames import FrameSequence
from ..intensity import IntensityWindow, apply_window, to_model_input
from ..labels import LabelWriter, MaskPatch, create_labels
from ..predictor import Backend, ImagePredictor
from ..sources import open_image
from .config import AutoMaskCancelled, AutoMaskConfig, AutoMaskError
from .decode import decode_view
from .grid import crop_boxes, near_inner_edge, nms, unit_grid
from .labels import paint, resolve_nesting
from .tiles import generate_tiled, plane_points
from .volume import default_seeds, segment_stack

__all__ = [
    "AutoMaskError",
    "AutoMaskCancelled",
    "AutoMaskConfig",
    "AutoMask",
    "AutoReport",
    "generate_masks",
    "masks_to_labels",
    "segment_everything",
]

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


@dataclass(frozen=True, eq=False)
class AutoMask:
    """One mask found by :func:`generate_masks`.

    Attributes:
        mask: (h, w) bool, cropped to ``bbox``.
        bbox: (row0, col0, row1, col1) of the plane, ends exclusive.
        score: the decoder's predicted IoU.
        stability: stability score (NaN where the filter was off and the mask is empty).
        point: (row, col) plane pixels of the click that produced it.
        crop: (row0, col0, row1, col1) of the crop or tile it was decoded in.
    """

    mask: np.ndarray
    bbox: tuple[int, int, int, int]
    score: float
    stability: float
    point: tuple[float, float]
    crop: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))

    def full(self, plane_hw: tuple[int, int]) -> np.ndarray:
        """The mask as an (H, W) bool array of the plane."""
        out = np.zeros(plane_hw, dtype=bool)
        r0, c0, r1, c1 = self.bbox
        out[r0:r1, c0:c1] = self.mask
        return out


@dataclass
class AutoReport:
    """What :func:`segment_everything` did.

    Attributes:
        labels: the labels array written (the writer's, or a new uint32 numpy array).
        objects: new object id -> the frame it was found on (``()`` for a single plane).
        seed_frames: frames the generator ran on, in the order processed (empty for a plane).
        candidates: per processed seed frame (or ``()`` for a plane), how many instances the
            generator's masks gave there (before those already tracked were set aside).
        cancelled: stopped by ``cancel``; everything written before stays.
    """

    labels: Any
    objects: dict[int, Any] = field(default_factory=dict)
    seed_frames: list[int] = field(default_factory=list)
    candidates: dict[Any, int] = field(default_factory=dict)
    cancelled: bool = False


def _make_mask(mask, bbox, score, stab, point, crop) -> AutoMask:
    return AutoMask(
        mask,
        tuple(int(v) for v in bbox),
        score,
        stab,
        (float(point[0]), float(point[1])),
        tuple(int(v) for v in crop),
    )


def _batches(n_points: int, per_batch: int) -> int:
    return -(-n_points // per_batch)


def generate_masks(
    model: Sam2Model | Backend | ImagePredictor,
    image: Any,
    *,
    config: AutoMaskConfig | None = None,
    frame: tuple[int, ...] | int = (),
    window: IntensityWindow | tuple[float, float] | str | None = None,
    axes: str | None = None,
    channel: int | None = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    cache: EmbeddingCache | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    **options: Any,
) -> list[AutoMask]:
    """Every mask SAM2's automatic generator finds on one plane, best first.

    Args:
        model: a :class:`Sam2Model`, a predictor backend, or an :class:`ImagePredictor` (its
            tiling and embedding cache are reused, e.g. the widget's after clicking).
        image: anything :func:`.sources.open_image` takes: (H, W), (H, W, 3) RGB, or a stack
            with ``frame`` choosing the plane (e.g. ``(z,)``).
        config, options: an :class:`AutoMaskConfig` and/or its fields by name
            (``points_per_side=16``); defaults: :meth:`AutoMaskConfig.for_model` (SAM2's, with
            the demo model's own filter thresholds for the demo model).
        window: the intensity window (None: robust percentiles of the data; ``(0, 255)`` for
            8-bit RGB as SAM2 sees it).
        tile_size, overlap: tiling of planes larger than the model input (default: the model
            input size, a quarter of it). A plane no larger than one tile is processed whole,
            as SAM2 does.
        progress: ``progress(done, total)`` after each batch of clicks.
        cancel: polled before each batch; True stops with :class:`AutoMaskCancelled`.

    Returns:
        :class:`AutoMask` records, possibly overlapping (wholes and parts), in SAM2's order.

    Raises:
        AutoMaskError: bad parameters (the message names the value and the allowed range).
        AutoMaskCancelled: ``cancel()`` returned True.
    """
    cfg = AutoMaskConfig.build(config, model, **options)
    if isinstance(model, ImagePredictor):
        predictor = model
    else:
        predictor = ImagePredictor(model, tile_size=tile_size, overlap=overlap, cache=cache)
    predictor.set_image(image, frame=frame, window=window, axes=axes, channel=channel)
    grid = predictor.grid
    size = predictor.backend.image_size

    def cancel_check() -> None:
        if cancel is not None and cancel():
            raise AutoMaskCancelled(f"automatic mask generation cancelled after {done} of {total} batches")

    def step() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)
        cancel_check()

    done = 0
    if not grid.untiled:
        if cfg.crop_n_layers:
            raise AutoMaskError(
                f"crop_n_layers={cfg.crop_n_layers} needs a plane that fits one model input; this "
                f"{grid.plane_hw[0]} x {grid.plane_hw[1]} plane is tiled at native resolution already, "
                "so use crop_n_layers=0"
            )
        total = _batches(
            len(plane_points(grid.plane_hw, grid.tile_size, cfg.points_per_side)), cfg.points_per_batch
        )
        total += len(grid.tiles)  # a batch boundary per tile at most
        cancel_check()
        found = generate_tiled(predictor, cfg, _make_mask, step, cancel_check)
        if progress is not None:
            progress(total, total)
        return found

    crops = crop_boxes(grid.plane_hw, cfg.crop_n_layers, cfg.crop_overlap_ratio)
    grids = [
        unit_grid(cfg.points_per_side // cfg.crop_n_points_downscale_factor**i)
        for i in range(cfg.crop_n_layers + 1)
    ]
    total = sum(_batches(len(grids[layer]), cfg.points_per_batch) for layer, _ in crops)
    cancel_check()
    found, crop_of = [], []
    for layer, crop in crops:
        for rec in _process_crop(predictor, cfg, layer, crop, grids[layer], size, step):
            found.append(rec)
            crop_of.append(crop)
    if len(crops) > 1 and found:
        boxes = torch.tensor([(r.bbox[1], r.bbox[0], r.bbox[3] - 1, r.bbox[2] - 1) for r in found])
        areas = torch.tensor([(c[2] - c[0]) * (c[3] - c[1]) for c in crop_of])
        keep = nms(boxes, 1 / areas, cfg.crop_nms_thresh)  # smaller crops first, as SAM2
        found = [found[i] for i in keep.tolist()]
    return found


def _process_crop(predictor: ImagePredictor, cfg, layer, crop, unit, size, step) -> list[AutoMask]:
    """SAM2's per-crop work: encode the crop, decode its grid, filter, NMS, back to the plane."""
    x0, y0, x1, y1 = crop
    hw = (y1 - y0, x1 - x0)
    plane_hw = predictor.grid.plane_hw
    if layer == 0:
        feats = predictor.features(predictor.grid.tiles[0])  # the whole plane, cached
    else:
        region = predictor.source.region(predictor.frame, slice(y0, y1), slice(x0, x1))
        feats = predictor.backend.encode(to_model_input(apply_window(region, predictor.window), size))
    points = unit * np.array(hw, dtype=np.float64)
    cands = decode_view(predictor.backend.decode, feats, hw, hw, points, cfg, size, step)
    plane_boxes = cands.boxes + torch.tensor([x0, y0, x0, y0])
    cands = cands.take(~near_inner_edge(plane_boxes, crop, plane_hw))
    cands = cands.take(nms(cands.boxes, cands.iou, cfg.box_nms_thresh))
    out = []
    for i, (bx0, by0, _, _) in enumerate(cands.boxes.tolist()):
        m = cands.masks[i]
        r0, c0 = by0 + y0, bx0 + x0
        pt = cands.points[i] + (y0, x0)
        out.append(
            _make_mask(
                m,
                (r0, c0, r0 + m.shape[0], c0 + m.shape[1]),
                float(cands.iou[i]),
                float(cands.stability[i]),
                pt,
                (y0, x0, y1, x1),
            )
        )
    return out


def masks_to_labels(
    masks: Sequence[AutoMask],
    plane_hw: tuple[int, int],
    *,
    min_area: int = 0,
    dtype: str | np.dtype = "uint32",
) -> np.ndarray:
    """One instance label image (H, W) from overlapping masks, ids 1..n, 0 = background.

    Nested masks are resolved first (a whole replaces its single part; a group of two or more
    objects gives way to its members), then overlaps are painted smaller-on-top; objects with
    fewer than ``min_area`` visible pixels or less than half of their mask visible are dropped.
    """
    if isinstance(min_area, bool) or not isinstance(min_area, int | np.integer) or min_area < 0:
        raise AutoMaskError(f"min_area must be an int >= 0 (pixels); got {min_area!r}")
    kept = [masks[i] for i in resolve_nesting(masks)]
    labels, _ = paint(kept, tuple(plane_hw), int(min_area), dtype)
    return labels


def segment_everything(
    model: Sam2Model | Backend,
    image: Any,
    *,
    axes: str | None = None,
    channel: int | None = None,
    axis: str | None = None,
    fixed: Mapping[str, int] | None = None,
    window: IntensityWindow | tuple[float, float] | str | None = None,
    config: AutoMaskConfig | None = None,
    seed_frames: Sequence[int] | None = None,
    seed_spacing: int = 4,
    min_area: int = 0,
    tile_size: int | None = None,
    overlap: int | None = None,
    tracker_crop: int | str | None = "auto",
    stop_after_absent: int | None = 3,
    cache: EmbeddingCache | None = None,
    writer: LabelWriter | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    **options: Any,
) -> AutoReport:
    """Instance labels for everything in a plane, a z-stack or a time-lapse.

    A plane (``yx``, RGB allowed) gets the generator's masks (:func:`generate_masks`) resolved
    into one label image (:func:`masks_to_labels`). A stack (``zyx``, ``tyx``, or ``tzyx`` with
    ``fixed`` choosing the other axis) gets instances from seed frames carried through the stack
    by the tracker with consistent ids; objects not tracked yet are picked up on each later seed
    frame (see :mod:`._automask_volume`).

    Args:
        model: a :class:`Sam2Model` (a predictor backend is enough for a single plane).
        image: anything :func:`.sources.open_image` takes; ``axes``/``channel`` as there.
        axis, fixed: the frame axis of a stack ("z" or "t"; default z if present) and the index
            of the other one for (t, z, y, x) data, as in :class:`.frames.FrameSequence`.
        window: intensity window for the whole dataset (None: robust percentiles).
        config, options: generator parameters (:class:`AutoMaskConfig`, or its fields by name);
            defaults as in :func:`generate_masks`.
        seed_frames: frames to run the generator on, processed in the given order (default: the
            middle frame, then every ``seed_spacing`` frames outward from it).
        min_area: drop objects with fewer visible pixels than this on the plane they are found on.
        tile_size, overlap, cache: tiling and embedding cache of the generator's predictor.
        tracker_crop, stop_after_absent: passed to the :class:`~.tracker.Tracker` (``crop``)
            and to :meth:`~.tracker.Tracker.run`.
        writer: where labels go (ids start above its largest id; no voxel of another object is
            overwritten). Default: a new uint32 numpy array of the image's shape.
        progress: ``progress(done, total)``. cancel: polled between batches and frames; True
            stops, keeping every finished frame written (a plane is written only when complete).

    Returns:
        An :class:`AutoReport` (``report.labels`` is the labels array).

    Raises:
        AutoMaskError: bad parameters, a labels array of the wrong shape, or a backend for a stack.
    """
    cfg = AutoMaskConfig.build(config, model, **options)
    if isinstance(min_area, bool) or not isinstance(min_area, int | np.integer) or min_area < 0:
        raise AutoMaskError(f"min_area must be an int >= 0 (pixels); got {min_area!r}")
    source = open_image(image, axes=axes, channel=channel)
    shape = tuple(source.frame_shape) + tuple(source.plane_hw)
    if writer is None:
        writer = LabelWriter(create_labels(shape))
    elif tuple(writer.labels.shape) != shape:
        raise AutoMaskError(
            f"the labels have shape {tuple(writer.labels.shape)} but the image (axes {source.axes!r}) needs "
            f"{shape}; create labels of the image's shape"
        )
    first_id = int(np.max(writer.labels[...])) + 1 if writer.labels.size else 1
    report = AutoReport(writer.labels)
    predictor = ImagePredictor(model, tile_size=tile_size, overlap=overlap, cache=cache)

    def find(frame: tuple[int, ...], prog: Progress | None) -> np.ndarray | None:
        try:
            masks = generate_masks(
                predictor, source, config=cfg, frame=frame, window=win, progress=prog, cancel=cancel
            )
        except AutoMaskCancelled:
            return None
        return masks_to_labels(masks, source.plane_hw, min_area=min_area)

    if not source.frame_shape:
        win = window
        labels = find((), progress)
        if labels is None:
            report.cancelled = True
            return report
        patches = {}
        for i, sl in enumerate(ndimage.find_objects(labels), start=1):  # ids are 1..n, none missing
            patches[first_id + i - 1] = MaskPatch(
                np.where(labels[sl] == i, 1.0, -1.0).astype(np.float32), (sl[0].start, sl[1].start)
            )
            report.objects[first_id + i - 1] = ()
        report.candidates[()] = len(patches)
        writer.write((), patches)
        return report

    if not isinstance(model, Sam2Model):
        raise AutoMaskError(
            "a stack is tracked with SAM2's memory: pass a Sam2Model, not a predictor backend"
        )
    seq = FrameSequence(
        source, axis=axis, fixed=fixed, window=window, image_size=model.config.image_size, cache_size=1
    )
    win = seq.window
    n = len(seq)
    if seed_frames is None:
        if (
            isinstance(seed_spacing, bool)
            or not isinstance(seed_spacing, int | np.integer)
            or seed_spacing < 1
        ):
            raise AutoMaskError(f"seed_spacing must be an int >= 1 (frames); got {seed_spacing!r}")
        seeds = default_seeds(n, int(seed_spacing))
    else:
        seeds = [int(f) for f in seed_frames]
        bad = [f for f in seeds if not 0 <= f < n]
        if not seeds or bad:
            raise AutoMaskError(
                f"seed_frames must be frame numbers in 0..{n - 1} along {seq.axis} (at least one); got {list(seed_frames)}"
            )
    segment_stack(
        model,
        seq,
        lambda f, prog: find(seq.source_index(f), prog),
        writer,
        report,
        seeds=seeds,
        first_id=first_id,
        min_area=min_area,
        tracker_crop=tracker_crop,
        stop_after_absent=stop_after_absent,
        progress=progress,
        cancel=cancel,
    )
    return report
