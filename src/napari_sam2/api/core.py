"""Scripting API: the engine without the GUI, on arrays, files and napari layers alike.

::

    from napari_sam2 import Prompt, load_model, propagate, segment, segment_everything

    model = load_model("demo")                                   # a name, a checkpoint file or "demo"
    result = segment("cells.tif", Prompt(points=[[120, 88]], labels=[1]), model=model)
    result.save("cells_labels.tif")                              # labels + provenance
    result = propagate("nuclei.zarr", {(30, 1): Prompt(box=(40, 150, 90, 210))}, model=model)
    result = segment_everything("nuclei.zarr", model=model, points_per_side=16)  # no prompts

*Images* are anything :func:`napari_sam2.open_image` reads (numpy, dask, zarr, OME-Zarr, TIFF path,
NIfTI/NRRD file or DICOM folder; see :mod:`napari_sam2.engine.medical`) or a napari Image layer
(duck-typed: ``.data``, ``.scale``, ``.translate``). *Prompts* are a :class:`Prompt` (object 1), a
list of them (objects 1, 2, ...), a dict ``{obj_id: Prompt}`` on ``frame``, a dict
``{(*frame, obj_id): Prompt}`` (e.g. ``{(z, 1): ...}``), a prompts file (see :func:`read_prompts`)
or napari Points/Shapes layers. Coordinates are image pixels (row, col); a layer's points are mapped
through its and the image layer's ``scale``/``translate``. Models, images, prompts and labels are
made into engine objects in :mod:`napari_sam2.api._inputs`.

Every call returns a :class:`SegmentationResult` whose ``record`` says how to make the labels again
(:mod:`napari_sam2.engine.provenance`); :func:`replay` does so.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..engine.cache import EmbeddingCache
from ..engine.frames import FrameError, FrameSequence
from ..engine.labels import LabelWriter, MaskPatch
from ..engine.predictor import ImagePredictor
from ..engine.prompts import PromptError
from ..engine.provenance import (
    ProvenanceError,
    ProvenanceRecord,
    image_entry,
    model_entry,
    options_entry,
    prompt_entries,
    read_prompts,
    read_record,
    runtime_entry,
)
from ..engine.sources import open_image
from ..engine.timelapse import track_through_time
from ..engine.tracker import Tracker, asks_for_an_object, not_found_message
from ..model import Sam2Model
from ._automatic import segment_everything
from ._inputs import (
    check_frames,
    check_ids,
    check_output,
    discard_partial,
    image_input,
    labels_target,
    load_model,
    medical_geometry,
    prompt_map,
    window_choice,
)
from ._inputs import resolve_model as _resolve_model
from ._results import Cancel, Cancelled, Progress, SegmentationResult, finish

AXIS_Z_T = "z+t"
"""``propagate(axis=...)`` for 3D objects followed through time on (t, z, y, x) data."""

__all__ = [
    "Cancelled",
    "SegmentationResult",
    "load_model",
    "propagate",
    "read_prompts",
    "replay",
    "segment",
    "segment_everything",
]


# ---------------------------------------------------------------------------------------------- calls
def segment(
    image: Any,
    prompts: Any,
    *,
    model: Sam2Model | str | os.PathLike | None = None,
    frame: int | Sequence[int] | None = None,
    window: Any = None,
    tile_size: int | None = None,
    overlap: int | None = None,
    max_tiles: int = 64,
    edge_margin: int = 8,
    multimask: bool = False,
    axes: str | None = None,
    channel: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    labels: Any = None,
    overwrite: bool = False,
    out: str | os.PathLike | None = None,
    force: bool = False,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> SegmentationResult:
    """Segment objects on the prompted planes, each plane on its own (no propagation).

    Args:
        image: array, dask/zarr array, TIFF or zarr path, or a napari Image layer.
        prompts: see the module docstring; a prompt's frame picks its plane.
        model: a loaded model, a name, a checkpoint path or ``"demo"`` (default: the best
            model available offline). Names and paths are loaded once per process.
        frame: the plane of prompts given without one (int or tuple over the t/z axes).
        window: the intensity window for the whole dataset: None (chosen: a MedSAM2 model gets
            its authors' window, the demo model its foreground window on images that are not
            medical volumes, a CT volume the ``ct:soft_tissue`` preset, anything else robust
            percentiles; see :mod:`napari_sam2.engine.window_choice`), "auto" (robust percentiles),
            (low, high) such as napari contrast limits, or a CT preset name. The record keeps the
            window used and why (``options["window_rule"]``, ``options["window_from"]``).
        tile_size, overlap, max_tiles, edge_margin: tiling of planes larger than the model
            input (see :class:`~napari_sam2.engine.predictor.ImagePredictor`).
        multimask: decode three candidates and keep the one with the best predicted IoU.
        axes, channel: passed to :func:`~napari_sam2.engine.sources.open_image`.
        cache_dir: keep tile embeddings on disk here (``napari-sam2 embed`` fills it).
        labels: write into these labels (array or napari Labels layer) instead of new ones.
        overwrite: a new mask may take voxels of other objects (default: never).
        out: also save to this ``.tif`` or ``.zarr`` (zarr is written as it goes, under a hidden
            temporary name that is removed if the run fails or is cancelled). Checked before any
            work: its folder must exist and be writable, and it must not exist unless ``force``.
            For a NIfTI/NRRD/DICOM input also ``.nii.gz``/``.nii``/``.nrrd`` with the input's affine.
        force: replace an existing ``out``, once the new labels are complete (a failed run
            leaves it as it was).
        device: "auto", "cpu", "cuda", ... for a model loaded here.
        progress: ``progress(objects_done, objects_total)``.
        cancel: polled before each object and tile; True raises :class:`Cancelled`.

    Raises:
        OutputError: ``out`` cannot be written (before any work; the message names the folder).
        PromptError: an object id below 1, a prompt off the image or on a frame it lacks.

    Returns:
        A :class:`SegmentationResult`: labels shaped frames + (H, W), and the provenance record.
    """
    check_output(out, force)  # before any work: an output that cannot be written fails now
    data, path, layer = image_input(image)
    pmap = prompt_map(prompts, frame, layer)
    check_ids(pmap)
    source = open_image(data, axes=axes, channel=channel)
    target = None
    try:
        geometry = medical_geometry(source, layer)
        check_frames(pmap, source)
        net = _resolve_model(model, device)
        # asked, else the model's convention (MedSAM2), else a CT volume's preset, else percentiles
        choice = window_choice(window, net, geometry, source)
        target, labels_layer = labels_target(labels, out, source, force)
        cache = EmbeddingCache(directory=cache_dir) if cache_dir is not None else None
        pred = ImagePredictor(
            net,
            tile_size=tile_size,
            overlap=overlap,
            cache=cache,
            max_tiles=max_tiles,
            edge_margin=edge_margin,
        )
        writer = LabelWriter(target, overwrite=overwrite)
        frames = sorted({f for f, _ in pmap})
        done = 0
        not_found: list[tuple[tuple[int, ...], int]] = []
        for f in frames:
            pred.set_image(source, frame=f, window=choice.window)
            masks = {}
            for (pf, obj), p in sorted(pmap.items()):
                if pf != f:
                    continue
                if cancel is not None and cancel():
                    raise Cancelled(f"cancelled after {done} of {len(pmap)} objects", target)
                r = pred.predict(p, multimask=multimask, cancel=cancel)
                patch = r.patch(r.best if multimask else 0)
                if not (patch.logits > 0).any() and asks_for_an_object(p):
                    not_found.append((f, obj))  # not found: keep what the labels hold
                else:
                    # as a mask (+1 inside, -1 outside): objects of one plane that overlap go to the
                    # smaller id, whatever their logits
                    masks[obj] = MaskPatch(
                        np.where(patch.logits > 0, 1.0, -1.0).astype(np.float32), patch.origin
                    )
                done += 1
                if progress is not None:
                    progress(done, len(pmap))
            writer.write(f, masks)
        record = ProvenanceRecord(
            kind="segment",
            image=image_entry(source, path),
            prompts=prompt_entries(pmap),
            model=model_entry(net),
            window=list(pred.window.as_tuple()),
            tiling={
                "tile_size": pred.tile_size,
                "overlap": pred.overlap,
                "max_tiles": max_tiles,
                "edge_margin": edge_margin,
            },
            propagation=None,
            options=options_entry(
                window, axes, channel, overwrite=overwrite, multimask=multimask, **choice.entry()
            ),
            runtime=runtime_entry(net),
        )
    except BaseException as err:
        discard_partial(target, out, err)
        raise
    finally:
        if source is not data:
            source.close()
    return finish(target, labels_layer, record, out, geometry, force, messages(not_found))


def propagate(
    image: Any,
    prompts: Any,
    *,
    model: Sam2Model | str | os.PathLike | None = None,
    axis: str | None = None,
    fixed: Mapping[str, int] | None = None,
    frame: int | Sequence[int] | None = None,
    window: Any = None,
    crop: int | str | None = "auto",
    max_crop: int | None = None,
    stop_after_absent: int | None = None,
    axes: str | None = None,
    channel: int | None = None,
    labels: Any = None,
    overwrite: bool = False,
    out: str | os.PathLike | None = None,
    force: bool = False,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> SegmentationResult:
    """Propagate prompted objects through z or t, outward from every prompted frame.

    Args:
        image: a (z, y, x), (t, y, x) or (t, z, y, x) image (any input :func:`segment` takes).
        prompts: keyed by the image's full frame index, e.g. ``{(z, obj_id): Prompt}`` or
            ``{(t, z, obj_id): Prompt}``; see the module docstring.
        axis: "z" or "t" (default: z if the image has it), or ``"z+t"`` on (t, z, y, x) data:
            each object is segmented in 3D at its prompted time points and followed through
            time (:func:`~napari_sam2.engine.timelapse.track_through_time`); keys are then
            ``{(t, z, obj_id): Prompt}`` and every time point is written.
        fixed: the index of the other axis of a (t, z, y, x) image, e.g. ``{"t": 3}``; by default
            taken from the prompts when they all share it.
        frame, window, axes, channel, labels, overwrite, out, force, device: as in :func:`segment`.
        crop, max_crop: native-resolution crops for large frames
            (:class:`~napari_sam2.engine.tracker.Tracker`).
        stop_after_absent: stop following an object after this many absent frames.
        progress: ``progress(frames_done, frames_total)`` (time points with ``"z+t"``). cancel: polled before each frame;
            True raises :class:`Cancelled` (finished frames stay written).

    Returns:
        A :class:`SegmentationResult` with labels over the whole image; only the frames along
        ``axis`` (at ``fixed``) are written (all of them with ``"z+t"``).
    """
    check_output(out, force)  # before any work: an output that cannot be written fails now
    data, path, layer = image_input(image)
    pmap = prompt_map(prompts, frame, layer)
    check_ids(pmap)
    source = open_image(data, axes=axes, channel=channel)
    target = None
    try:
        geometry = medical_geometry(source, layer)
        check_frames(pmap, source)
        frame_axes = source.axes[:-2]
        axis = axis or ("z" if "z" in frame_axes else "t")
        if axis == AXIS_Z_T:
            net, target, labels_layer, choice, report = _through_time(
                source, pmap, model, device, fixed, window, geometry, crop, max_crop, stop_after_absent,
                labels, out, force, overwrite, progress, cancel,
            )  # fmt: skip
            fixed, window_used, not_found = {}, choice.window, []
            if report.cancelled:
                raise Cancelled(
                    f"cancelled after {len(report.objects)} of {source.frame_shape[0]} time points", target
                )
        else:
            if axis not in frame_axes:
                hint = f"; or axis={AXIS_Z_T!r} for (t, z) data" if frame_axes == "tz" else ""
                raise FrameError(
                    f"the image has no {axis} axis (axes {source.axes!r}); use axis={frame_axes[:1]!r}{hint}"
                )
            if len(frame_axes) == 2 and fixed is None:
                other = frame_axes.replace(axis, "")
                values = {f[frame_axes.index(other)] for f, _ in pmap}
                if len(values) == 1:
                    fixed = {other: values.pop()}
            fixed = {k: int(v) for k, v in (fixed or {}).items()}
            for f, obj in pmap:
                if any(f[frame_axes.index(k)] != v for k, v in fixed.items() if k in frame_axes):
                    raise PromptError(
                        f"object {obj}'s prompt on frame {list(f)} is not at {fixed}; propagation runs there"
                    )
            net = _resolve_model(model, device)
            choice = window_choice(window, net, geometry, source)  # as in segment
            seq = FrameSequence(
                source, axis=axis, fixed=fixed, window=choice.window, image_size=net.config.image_size
            )
            pos = frame_axes.index(axis)
            target, labels_layer = labels_target(labels, out, source, force)
            tracker = Tracker(net, seq, len(seq), seq.frame_hw, crop=crop, max_crop=max_crop)
            for (f, obj), p in sorted(pmap.items()):
                tracker.add_prompt(f[pos], obj, p)
            report = tracker.run(
                LabelWriter(target, overwrite=overwrite),
                index=seq.source_index,
                progress=progress,
                cancel=cancel,
                stop_after_absent=stop_after_absent,
            )
            if report.cancelled:
                raise Cancelled(f"cancelled after {len(report.frames)} of {report.total} frames", target)
            window_used = seq.window
            not_found = [
                (next(f for f, o in pmap if o == obj and f[pos] == frame_no), obj)
                for frame_no, obj in report.not_found
            ]
        record = ProvenanceRecord(
            kind="propagate",
            image=image_entry(source, path),
            prompts=prompt_entries(pmap),
            model=model_entry(net),
            window=list(window_used.as_tuple()),
            tiling={},
            propagation={
                "axis": axis,
                "fixed": fixed,
                "crop": crop,
                "max_crop": max_crop,
                "stop_after_absent": stop_after_absent,
            },
            options=options_entry(window, axes, channel, overwrite=overwrite, **choice.entry()),
            runtime=runtime_entry(net),
        )
    except BaseException as err:
        discard_partial(target, out, err)
        raise
    finally:
        if source is not data:
            source.close()
    return finish(target, labels_layer, record, out, geometry, force, messages(not_found))


def messages(not_found: list) -> list[str]:
    """The result's messages: one line naming where the model found nothing, or none."""
    return [not_found_message(not_found)] if not_found else []


def _through_time(
    source: Any,
    pmap: dict,
    model: Any,
    device: Any,
    fixed: Any,
    window: Any,
    geometry: Any,
    crop: Any,
    max_crop: Any,
    stop_after_absent: Any,
    labels: Any,
    out: Any,
    force: bool,
    overwrite: bool,
    progress: Progress | None,
    cancel: Cancel | None,
) -> tuple:
    """``propagate(axis="z+t")``: 3D objects followed through time on (t, z, y, x) data
    (:func:`~napari_sam2.engine.timelapse.track_through_time`)."""
    if source.axes[:-2] != "tz":
        raise FrameError(
            f"axis={AXIS_Z_T!r} follows 3D objects through time and needs a (t, z, y, x) image; "
            f"this one has axes {source.axes!r}"
            + (" (a guess: pass axes='tzyx' if the file has t and z)" if source.axes_guessed else "")
        )
    if fixed:
        raise FrameError(
            f"axis={AXIS_Z_T!r} runs through every time point and slice; leave out fixed={fixed}"
        )
    net = _resolve_model(model, device)
    choice = window_choice(window, net, geometry, source)
    target, labels_layer = labels_target(labels, out, source, force)
    prompts3 = {(f[0], f[1], obj): p for (f, obj), p in sorted(pmap.items())}
    report = track_through_time(
        net, source, prompts3, LabelWriter(target, overwrite=overwrite), window=choice.window, crop=crop,
        max_crop=max_crop, progress=progress, cancel=cancel, stop_after_absent=stop_after_absent,
    )  # fmt: skip
    return net, target, labels_layer, choice, report


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n and n != before:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def replay(
    record: ProvenanceRecord | str | os.PathLike,
    *,
    image: Any = None,
    model: Sam2Model | str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
) -> SegmentationResult:
    """Run a record again (a :class:`ProvenanceRecord`, a labels file that carries one, or its JSON).

    The recorded image, model, prompts, resolved intensity window, tiling and propagation settings,
    generator options and seed frames (``segment_everything``), device and thread count are used, so on the same machine the labels are equal bit for bit
    (compare ``labels_digest(result.labels)`` with ``record.labels["sha256"]``).

    Args:
        image: the image, if the record's path is gone or the data was in memory.
        model: another model (default: the recorded one, whose checksum must still match).
        out, device, progress: as in :func:`segment`.

    Raises:
        ProvenanceError: no record, a record of an unknown kind, an image of another shape or
            dtype, or a model file that changed since (its SHA-256 differs).
        FileNotFoundError: the recorded image is gone (pass ``image=``).
    """
    if not isinstance(record, ProvenanceRecord):
        record = read_record(record)
    func, kwargs = record.api_call()  # an unknown kind fails here
    img = image if image is not None else record.image.get("path")
    if img is None:
        raise ProvenanceError("the recorded image was in memory (no path): pass the image to replay it")
    if model is None and record.model.get("source") is None:
        raise ProvenanceError(
            f"the record names no model file (model {record.model.get('name')!r} was given as an object): "
            "pass the model to replay it"
        )
    net = _resolve_model(
        model if model is not None else record.model["source"], device or record.runtime.get("device", "cpu")
    )
    got = getattr(net, "napari_sam2_source", {}).get("sha256")
    if model is None and record.model.get("sha256") and got != record.model["sha256"]:
        raise ProvenanceError(
            f"the model {record.model['source']} changed since the labels were made: SHA-256 {got}, "
            f"recorded {record.model['sha256']}; pass the original model file"
        )
    data, _, _ = image_input(img)
    with open_image(data, axes=record.options.get("axes"), channel=record.options.get("channel")) as src:
        shape = [*src.frame_shape, *src.plane_hw] + ([3] if src.rgb else [])
        if shape != list(record.image["shape"]) or str(src.dtype) != record.image["dtype"]:
            raise ProvenanceError(
                f"the image is {shape} {src.dtype} but the record was made on {record.image['shape']} "
                f"{record.image['dtype']}; pass the original image"
            )
    args = () if func == "segment_everything" else (record.prompt_map(),)
    call = {"segment": segment, "propagate": propagate, "segment_everything": segment_everything}[func]
    with _threads(record.runtime.get("threads")):
        return call(img, *args, model=net, out=out, progress=progress, **kwargs)
