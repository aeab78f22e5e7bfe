"""``segment_everything`` of the scripting API: the automatic mask generator on arrays, files and
layers, with provenance (see :mod:`napari_sam2.api` for the conventions)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..engine import automask
from ..engine.automask import AutoMaskConfig
from ..engine.cache import EmbeddingCache
from ..engine.labels import LabelWriter
from ..engine.predictor import ImagePredictor
from ..engine.provenance import ProvenanceRecord, image_entry, model_entry, options_entry, runtime_entry
from ..engine.sources import open_image
from ..model import Sam2Model
from ._inputs import (
    check_output,
    discard_partial,
    image_input,
    labels_target,
    medical_geometry,
    window_choice,
)
from ._inputs import resolve_model as _resolve_model
from ._results import Cancel, Cancelled, Progress, SegmentationResult, finish

__all__ = ["segment_everything"]


def segment_everything(
    image: Any,
    *,
    model: Sam2Model | str | os.PathLike | None = None,
    axis: str | None = None,
    fixed: Mapping[str, int] | None = None,
    window: Any = None,
    config: AutoMaskConfig | None = None,
    seed_frames: Sequence[int] | None = None,
    seed_spacing: int = 4,
    min_area: int = 0,
    tile_size: int | None = None,
    overlap: int | None = None,
    tracker_crop: int | str | None = "auto",
    stop_after_absent: int | None = 3,
    axes: str | None = None,
    channel: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    labels: Any = None,
    out: str | os.PathLike | None = None,
    force: bool = False,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    **options: Any,
) -> SegmentationResult:
    """Instance labels for everything SAM2's automatic mask generator finds; no prompts.

    A plane gets the generator's masks resolved into one label image; a (z, y, x) or (t, y, x)
    stack gets instances found on seed frames and carried through the stack by the tracker with
    consistent ids (:func:`napari_sam2.engine.automask.segment_everything`, docs/automatic.md).

    Args:
        image: a plane, a stack or a (t, z, y, x) image with ``fixed`` (any input :func:`segment` takes).
        config, options: generator parameters, an
            :class:`~napari_sam2.engine.automask.AutoMaskConfig` and/or its fields by name
            (``points_per_side=16``, ``pred_iou_thresh=0.7``, ...); defaults are SAM2's, with
            the demo model's own filter thresholds for the demo model
            (:meth:`~napari_sam2.engine.automask.AutoMaskConfig.for_model`).
        axis, fixed: the frame axis of a stack and the other axis's index, as in :func:`propagate`.
        seed_frames: frames along ``axis`` to run the generator on, in that order (default: the
            middle frame, then every ``seed_spacing`` frames outward).
        min_area: drop objects with fewer visible pixels than this where they are found.
        tile_size, overlap: tiling of planes larger than the model input.
        tracker_crop, stop_after_absent: as ``crop`` and ``stop_after_absent`` in :func:`propagate` (default: stop after 3).
        window, axes, channel, cache_dir, out, force, device: as in :func:`segment`.
        labels: write into these labels (array or napari Labels layer); new ids start above its
            largest id and never take another object's voxels.
        progress: ``progress(done, total)``. cancel: polled between click batches and frames;
            True raises :class:`Cancelled` (finished frames stay written).

    Returns:
        A :class:`SegmentationResult`; its record holds the generator options, the seed frames as
        processed and the tiling, so :func:`replay` makes the same labels.

    Raises:
        AutoMaskError: a bad generator option or seed frame (the message names it and the range).
    """
    AutoMaskConfig.build(config, **options)  # bad options fail before the model loads
    check_output(out, force)  # so does an output that cannot be written
    data, path, layer = image_input(image)
    source = open_image(data, axes=axes, channel=channel)
    target = None
    try:
        net = _resolve_model(model, device)
        cfg = AutoMaskConfig.build(config, net, **options)  # the model's defaults where none given
        geometry = medical_geometry(source, layer)
        frame_axes = source.axes[:-2]
        if frame_axes:
            axis = axis or ("z" if "z" in frame_axes else "t")
        target, labels_layer = labels_target(labels, out, source, force)
        # asked, else the model's convention (MedSAM2), else a CT volume's preset, else percentiles
        choice = window_choice(window, net, geometry, source)
        win = choice.window
        cache = EmbeddingCache(directory=cache_dir) if cache_dir is not None else None
        tiles = ImagePredictor(net, tile_size=tile_size, overlap=overlap)  # resolved tiling, to record
        report = automask.segment_everything(
            net,
            source,
            axis=axis,
            fixed=fixed,
            window=win,
            config=cfg,
            seed_frames=seed_frames,
            seed_spacing=seed_spacing,
            min_area=min_area,
            tile_size=tiles.tile_size,
            overlap=tiles.overlap,
            tracker_crop=tracker_crop,
            stop_after_absent=stop_after_absent,
            cache=cache,
            writer=LabelWriter(target),
            progress=progress,
            cancel=cancel,
        )
        if report.cancelled:
            raise Cancelled(f"cancelled after {len(report.seed_frames)} seed frame(s)", target)
        stack = None
        if frame_axes:
            stack = {
                "axis": axis,
                "fixed": {k: int(v) for k, v in (fixed or {}).items()},
                "tracker_crop": tracker_crop,
                "stop_after_absent": stop_after_absent,
                "seed_frames": list(report.seed_frames),
                "seed_spacing": seed_spacing,
            }
        record = ProvenanceRecord(
            kind="auto",
            image=image_entry(source, path),
            prompts=[],
            model=model_entry(net),
            window=list(win.as_tuple()),
            tiling={"tile_size": tiles.tile_size, "overlap": tiles.overlap},
            propagation=stack,
            options=options_entry(
                window, axes, channel, min_area=min_area, generator=dataclasses.asdict(cfg), **choice.entry()
            ),
            runtime=runtime_entry(net),
        )
    except BaseException as err:
        discard_partial(target, out, err)
        raise
    finally:
        if source is not data:
            source.close()
    return finish(target, labels_layer, record, out, geometry, force)
