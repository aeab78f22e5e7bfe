"""Scripting API: the engine without the GUI, on arrays, files and napari layers alike.

::

    from napari_sam2 import Prompt, load_model, propagate, segment

    model = load_model("demo")                                   # a name, a checkpoint file or "demo"
    result = segment("cells.tif", Prompt(points=[[120, 88]], labels=[1]), model=model)
    result.save("cells_labels.tif")                              # labels + provenance
    result = propagate("nuclei.zarr", {(30, 1): Prompt(box=(40, 150, 90, 210))}, model=model)

*Images* are anything :func:`napari_sam2.open_image` reads (numpy, dask, zarr, OME-Zarr, TIFF path)
or a napari Image layer (duck-typed: ``.data``, ``.scale``, ``.translate``). *Prompts* are a
:class:`Prompt` (object 1), a list of them (objects 1, 2, ...), a dict ``{obj_id: Prompt}`` on
``frame``, a dict ``{(*frame, obj_id): Prompt}`` (e.g. ``{(z, 1): ...}``), a prompts file (see
:func:`read_prompts`) or napari Points/Shapes layers. Coordinates are image pixels (row, col); a
layer's points are mapped through its and the image layer's ``scale``/``translate``.

Every call returns a :class:`SegmentationResult` whose ``record`` says how to make the labels again
(:mod:`napari_sam2.engine.provenance`); :func:`replay` does so.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from .engine import models as _models
from .engine.cache import EmbeddingCache, weights_fingerprint
from .engine.frames import FrameError, FrameSequence
from .engine.labels import LabelError, LabelWriter, create_labels
from .engine.predictor import ImagePredictor
from .engine.prompts import Prompt, PromptError
from .engine.provenance import (
    ProvenanceError,
    ProvenanceRecord,
    file_sha256,
    prompt_entries,
    prompts_from_table,
    python_script,
    read_labels,
    read_prompts,
    read_record,
    temporary_path,
    write_labels,
)
from .engine.sources import ImageSource, open_image
from .engine.tracker import Tracker
from .model import Sam2Model
from .model.weights import OFFICIAL_WEIGHTS, cache_dir

__all__ = ["Cancelled", "SegmentationResult", "load_model", "propagate", "read_prompts", "replay", "segment"]

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
PromptKey = tuple[tuple[int, ...], int]


class Cancelled(RuntimeError):
    """``cancel()`` returned True; ``labels`` holds what was finished (whole planes only)."""

    def __init__(self, message: str, labels: Any = None) -> None:
        super().__init__(message)
        self.labels = labels


@dataclass
class SegmentationResult:
    """Labels and the record of how they were made.

    Attributes:
        labels: integer labels shaped like the image's frames + (H, W), 0 = background (numpy,
            or zarr when written to a ``.zarr`` ``out``).
        record: the :class:`~napari_sam2.engine.provenance.ProvenanceRecord`.
        path: where the labels were saved, if they were.
    """

    labels: np.ndarray | zarr.Array
    record: ProvenanceRecord
    path: Path | None = None

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the labels with their provenance to TIFF (``.tif``) or zarr (``.zarr``)."""
        self.path = write_labels(path, self.labels, self.record, overwrite=overwrite)
        return self.path

    def script(self) -> str:
        """A runnable Python script that makes these labels again (``python_script(record)``)."""
        return python_script(self.record)


# ---------------------------------------------------------------------------------------------- models
_MODELS: OrderedDict[tuple, Sam2Model] = OrderedDict()
_MODELS_LOCK = threading.Lock()
_SHA: dict[tuple[str, int, int], str] = {}
LOADS = [0]
"""How many models this process has loaded through :func:`load_model` (the batch tests read it)."""


def _checkpoint_sha(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA:
        _SHA[key] = file_sha256(path)
    return _SHA[key]


def _model_source(source: str | os.PathLike) -> dict[str, Any]:
    """Where a model comes from, for provenance: the source to load it again and the file's SHA-256."""
    path = Path(source).expanduser()
    if path.is_file():
        return {"source": str(path.resolve()), "sha256": _checkpoint_sha(path)}
    name = str(source)
    if name == _models.DEMO_NAME:
        return {"source": name, "sha256": _checkpoint_sha(_models.demo_checkpoint_path())}
    info = OFFICIAL_WEIGHTS.get(name.removesuffix(".pt"))
    if info is not None:
        cached = cache_dir() / info.filename
        sha = info.sha256 or (_checkpoint_sha(cached) if cached.is_file() else None)
        return {"source": info.name, "sha256": sha}
    return {"source": name, "sha256": None}


def load_model(
    source: str | os.PathLike | None = None,
    *,
    config: Any = None,
    device: str | torch.device | None = None,
    download: bool = True,
    progress: Callable[[int, int | None], None] | None = None,
) -> Sam2Model:
    """:func:`napari_sam2.engine.models.load_model` (a name, a checkpoint path, ``"demo"``, or None
    for the best model available offline), remembering the source and checkpoint SHA-256 so that
    results made with the model record them."""
    source = _models.default_model_name() if source is None else source
    model = _models.load_model(source, config=config, device=device, download=download, progress=progress)
    model.napari_sam2_source = _model_source(source)
    LOADS[0] += 1
    return model


def _resolve_model(model: Sam2Model | str | os.PathLike | None, device: Any) -> Sam2Model:
    """A model object; names and paths are loaded once per process and device (then reused)."""
    if isinstance(model, Sam2Model):
        return model
    source = _models.default_model_name() if model is None else str(model)
    path = Path(source).expanduser()
    # a rewritten checkpoint file is loaded again
    stamp = (path.stat().st_size, path.stat().st_mtime_ns) if path.is_file() else None
    key = (source, str(_models.select_device(device)), stamp)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(source, device=device)
            while len(_MODELS) > 2:
                _MODELS.popitem(last=False)
        _MODELS.move_to_end(key)
        return _MODELS[key]


def _model_record(model: Sam2Model) -> dict[str, Any]:
    known = getattr(model, "napari_sam2_source", None) or {"source": None, "sha256": None}
    return {**known, "name": model.config.name, "fingerprint": weights_fingerprint(model)}


# ---------------------------------------------------------------------------------------------- inputs
def _is_layer(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("data", "scale", "translate")) and not isinstance(obj, np.ndarray)


def _image_input(image: Any) -> tuple[Any, str | None, Any]:
    """-> (data for open_image, absolute path or None, the napari layer or None)."""
    if _is_layer(image):
        path = getattr(getattr(image, "source", None), "path", None)
        return image.data, path, image
    if isinstance(image, (str, os.PathLike)):
        path = Path(image).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"image not found: {path}")
        return path, str(path.resolve()), None
    return image, None, None


def _features(layer: Any) -> dict[str, list]:
    table = getattr(layer, "features", None)
    if table is not None and hasattr(table, "columns"):
        return {str(c): list(table[c]) for c in table.columns}
    return {str(k): list(v) for k, v in (getattr(layer, "properties", None) or {}).items()}


def _layer_to_image(coords: np.ndarray, layer: Any, image_layer: Any) -> np.ndarray:
    """Layer data coordinates -> the image layer's data coordinates, via world coordinates."""
    if image_layer is None:
        return coords
    world = (
        coords * np.asarray(layer.scale)[-coords.shape[-1] :]
        + np.asarray(layer.translate)[-coords.shape[-1] :]
    )
    return (world - np.asarray(image_layer.translate)[-coords.shape[-1] :]) / np.asarray(image_layer.scale)[
        -coords.shape[-1] :
    ]


def _layer_prompts(layers: Sequence[Any], image_layer: Any) -> dict[PromptKey, Prompt]:
    from .engine.provenance import _merge

    maps = []
    for layer in layers:
        feats = _features(layer)
        if hasattr(layer, "shape_type"):  # a Shapes layer: rectangles are boxes
            kinds = set(layer.shape_type)
            if kinds - {"rectangle"}:
                raise PromptError(
                    f"the Shapes layer {getattr(layer, 'name', '')!r} has {kinds}; only rectangles are boxes"
                )
            verts = [_layer_to_image(np.asarray(v, dtype=float), layer, image_layer) for v in layer.data]
            maps.append(prompts_from_table(verts, feats, True, f"layer {getattr(layer, 'name', '')!r}"))
        else:
            coords = _layer_to_image(np.asarray(layer.data, dtype=float), layer, image_layer)
            maps.append(prompts_from_table(coords, feats, False, f"layer {getattr(layer, 'name', '')!r}"))
    return _merge(*maps)


def _prompt_map(prompts: Any, frame: Any, image_layer: Any) -> dict[PromptKey, Prompt]:
    """Any accepted prompt form -> {(frame tuple, obj_id): Prompt}."""
    frame = () if frame is None else ((int(frame),) if np.ndim(frame) == 0 else tuple(int(f) for f in frame))
    if isinstance(prompts, (str, os.PathLike)):
        return read_prompts(prompts)
    if isinstance(prompts, Prompt):
        return {(frame, 1): prompts}
    if _is_layer(prompts):
        return _layer_prompts([prompts], image_layer)
    if isinstance(prompts, Mapping):
        out = {}
        for key, p in prompts.items():
            if not isinstance(p, Prompt):
                raise PromptError(f"prompt for {key!r} is a {type(p).__name__}; use napari_sam2.Prompt")
            if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], tuple):  # ((frame...), obj)
                out[(tuple(int(k) for k in key[0]), int(key[1]))] = p
            elif isinstance(key, tuple):
                out[(tuple(int(k) for k in key[:-1]), int(key[-1]))] = p
            else:
                out[(frame, int(key))] = p
        return out
    if isinstance(prompts, Sequence) and prompts:
        if all(isinstance(p, Prompt) for p in prompts):
            return {(frame, i): p for i, p in enumerate(prompts, start=1)}
        if all(_is_layer(p) for p in prompts):
            return _layer_prompts(prompts, image_layer)
    raise PromptError(
        f"cannot read prompts from {type(prompts).__name__}: give a Prompt, a list of them, a dict "
        "{obj_id: Prompt} or {(*frame, obj_id): Prompt}, a prompts file, or napari Points/Shapes layers"
    )


def _check_frames(prompts: Mapping[PromptKey, Prompt], source: ImageSource) -> None:
    if not prompts:
        raise PromptError("no prompts: give at least one click or box")
    for (frame, obj), p in prompts.items():
        if len(frame) != len(source.frame_shape) or any(
            not 0 <= f < n for f, n in zip(frame, source.frame_shape)
        ):
            raise PromptError(
                f"object {obj}'s prompt is on frame {list(frame)}, which does not fit the image's frame axes "
                f"{source.axes[:-2]!r} of size {list(source.frame_shape)}; give one index per axis "
                "(frame= or keys (*frame, obj_id))"
            )
        p.check_inside(source.plane_hw)


def _labels_target(labels: Any, out: Any, source: ImageSource) -> tuple[Any, Any]:
    """-> (the array to write into, the layer to refresh or None)."""
    shape = (*source.frame_shape, *source.plane_hw)
    if labels is not None:
        layer = labels if _is_layer(labels) else None
        target = labels.data if layer is not None else labels
        if tuple(target.shape) != shape:
            raise LabelError(f"labels of shape {tuple(target.shape)} do not fit the image's {shape}")
        return target, layer
    if out is not None:
        if Path(out).exists():
            raise ProvenanceError(
                f"{out} already exists; choose another output (labels are never overwritten)"
            )
        if str(out).lower().endswith(".zarr"):
            tmp = temporary_path(out)
            if tmp.exists():
                import shutil

                shutil.rmtree(tmp)
            return create_labels(shape, path=tmp), None
    return create_labels(shape), None


def _runtime(model: Sam2Model) -> dict[str, Any]:
    try:
        ours = version("napari-sam2")
    except PackageNotFoundError:
        ours = "0+unknown"
    return {
        "napari_sam2": ours,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "device": str(model.device),
        "threads": torch.get_num_threads(),
    }


def _finish(target, layer, record, out) -> SegmentationResult:
    if layer is not None and callable(getattr(layer, "refresh", None)):
        layer.refresh()
    result = SegmentationResult(target, record)
    if out is not None:
        result.save(out)
        if isinstance(target, zarr.Array):
            result.labels = read_labels(out)
    return result


def _image_record(source: ImageSource, path: str | None) -> dict[str, Any]:
    shape = [*source.frame_shape, *source.plane_hw] + ([3] if source.rgb else [])
    return {
        "path": path,
        "identity": source.identity,
        "shape": shape,
        "dtype": str(source.dtype),
        "axes": source.axes,
    }


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
        window: the intensity window for the whole dataset: None (robust percentiles), (low,
            high) such as napari contrast limits, or a CT preset name.
        tile_size, overlap, max_tiles, edge_margin: tiling of planes larger than the model
            input (see :class:`~napari_sam2.engine.predictor.ImagePredictor`).
        multimask: decode three candidates and keep the one with the best predicted IoU.
        axes, channel: passed to :func:`~napari_sam2.engine.sources.open_image`.
        cache_dir: keep tile embeddings on disk here (``napari-sam2 embed`` fills it).
        labels: write into these labels (array or napari Labels layer) instead of new ones.
        overwrite: a new mask may take voxels of other objects (default: never).
        out: also save to this ``.tif`` or ``.zarr`` (must not exist; zarr is written as it goes).
        device: "auto", "cpu", "cuda", ... for a model loaded here.
        progress: ``progress(objects_done, objects_total)``.
        cancel: polled before each object and tile; True raises :class:`Cancelled`.

    Returns:
        A :class:`SegmentationResult`: labels shaped frames + (H, W), and the provenance record.
    """
    net = _resolve_model(model, device)
    data, path, layer = _image_input(image)
    pmap = _prompt_map(prompts, frame, layer)
    source = open_image(data, axes=axes, channel=channel)
    try:
        _check_frames(pmap, source)
        target, labels_layer = _labels_target(labels, out, source)
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
        for f in frames:
            pred.set_image(source, frame=f, window=window)
            masks = {}
            for (pf, obj), p in sorted(pmap.items()):
                if pf != f:
                    continue
                if cancel is not None and cancel():
                    raise Cancelled(f"cancelled after {done} of {len(pmap)} objects", target)
                r = pred.predict(p, multimask=multimask, cancel=cancel)
                masks[obj] = r.full(r.best if multimask else 0)
                done += 1
                if progress is not None:
                    progress(done, len(pmap))
            writer.write(f, masks)
        record = ProvenanceRecord(
            kind="segment",
            image=_image_record(source, path),
            prompts=prompt_entries(pmap),
            model=_model_record(net),
            window=list(pred.window.as_tuple()),
            tiling={
                "tile_size": pred.tile_size,
                "overlap": pred.overlap,
                "max_tiles": max_tiles,
                "edge_margin": edge_margin,
            },
            propagation=None,
            options=_options(window, axes, channel, overwrite, multimask=multimask),
            runtime=_runtime(net),
        )
    finally:
        if source is not data:
            source.close()
    return _finish(target, labels_layer, record, out)


def _options(window: Any, axes: Any, channel: Any, overwrite: bool, **more: Any) -> dict[str, Any]:
    asked = window.as_tuple() if hasattr(window, "as_tuple") else window
    asked = list(asked) if isinstance(asked, (tuple, list, np.ndarray)) else asked
    return {"window_asked": asked, "axes": axes, "channel": channel, "overwrite": overwrite, **more}


def propagate(
    image: Any,
    prompts: Any,
    *,
    model: Sam2Model | str | os.PathLike | None = None,
    axis: str | None = None,
    fixed: Mapping[str, int] | None = None,
    frame: int | Sequence[int] | None = None,
    window: Any = None,
    tracker_window: int | str | None = "auto",
    max_window: int | None = None,
    stop_after_absent: int | None = None,
    axes: str | None = None,
    channel: int | None = None,
    labels: Any = None,
    overwrite: bool = False,
    out: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
) -> SegmentationResult:
    """Propagate prompted objects through z or t, outward from every prompted frame.

    Args:
        image: a (z, y, x), (t, y, x) or (t, z, y, x) image (any input :func:`segment` takes).
        prompts: keyed by the image's full frame index, e.g. ``{(z, obj_id): Prompt}`` or
            ``{(t, z, obj_id): Prompt}``; see the module docstring.
        axis: "z" or "t" (default: z if the image has it).
        fixed: the index of the other axis of a (t, z, y, x) image, e.g. ``{"t": 3}``; by default
            taken from the prompts when they all share it.
        frame, window, axes, channel, labels, overwrite, out, device: as in :func:`segment`.
        tracker_window, max_window: native-resolution windows for large frames
            (:class:`~napari_sam2.engine.tracker.Tracker`).
        stop_after_absent: stop following an object after this many absent frames.
        progress: ``progress(frames_done, frames_total)``. cancel: polled before each frame;
            True raises :class:`Cancelled` (finished frames stay written).

    Returns:
        A :class:`SegmentationResult` with labels over the whole image; only the frames along
        ``axis`` (at ``fixed``) are written.
    """
    net = _resolve_model(model, device)
    data, path, layer = _image_input(image)
    pmap = _prompt_map(prompts, frame, layer)
    source = open_image(data, axes=axes, channel=channel)
    try:
        _check_frames(pmap, source)
        frame_axes = source.axes[:-2]
        axis = axis or ("z" if "z" in frame_axes else "t")
        if axis not in frame_axes:
            raise FrameError(
                f"the image has no {axis} axis (axes {source.axes!r}); use axis={frame_axes[:1]!r}"
            )
        if len(frame_axes) == 2 and fixed is None:
            other = frame_axes.replace(axis, "")
            values = {f[frame_axes.index(other)] for f, _ in pmap}
            if len(values) == 1:
                fixed = {other: values.pop()}
        fixed = {k: int(v) for k, v in (fixed or {}).items()}
        seq = FrameSequence(source, axis=axis, fixed=fixed, window=window, image_size=net.config.image_size)
        pos = frame_axes.index(axis)
        for f, obj in pmap:
            if any(f[frame_axes.index(k)] != v for k, v in fixed.items() if k in frame_axes):
                raise PromptError(
                    f"object {obj}'s prompt on frame {list(f)} is not at {fixed}; propagation runs there"
                )
        target, labels_layer = _labels_target(labels, out, source)
        tracker = Tracker(net, seq, len(seq), seq.frame_hw, window=tracker_window, max_window=max_window)
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
        record = ProvenanceRecord(
            kind="propagate",
            image=_image_record(source, path),
            prompts=prompt_entries(pmap),
            model=_model_record(net),
            window=list(seq.window.as_tuple()),
            tiling={},
            propagation={
                "axis": axis,
                "fixed": fixed,
                "tracker_window": tracker_window,
                "max_window": max_window,
                "stop_after_absent": stop_after_absent,
            },
            options=_options(window, axes, channel, overwrite),
            runtime=_runtime(net),
        )
    finally:
        if source is not data:
            source.close()
    return _finish(target, labels_layer, record, out)


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
    device and thread count are used, so on the same machine the labels are equal bit for bit
    (compare ``labels_digest(result.labels)`` with ``record.labels["sha256"]``).

    Args:
        image: the image, if the record's path is gone or the data was in memory.
        model: another model (default: the recorded one, whose checksum must still match).
        out, device, progress: as in :func:`segment`.

    Raises:
        ProvenanceError: no record, an image of another shape or dtype, or a model file that
            changed since (its SHA-256 differs).
        FileNotFoundError: the recorded image is gone (pass ``image=``).
    """
    if not isinstance(record, ProvenanceRecord):
        record = read_record(record)
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
    data, _, _ = _image_input(img)
    with open_image(data, axes=record.options.get("axes"), channel=record.options.get("channel")) as src:
        shape = [*src.frame_shape, *src.plane_hw] + ([3] if src.rgb else [])
        if shape != list(record.image["shape"]) or str(src.dtype) != record.image["dtype"]:
            raise ProvenanceError(
                f"the image is {shape} {src.dtype} but the record was made on {record.image['shape']} "
                f"{record.image['dtype']}; pass the original image"
            )
    common = {
        "model": net,
        "window": tuple(record.window),
        "axes": record.options.get("axes"),
        "channel": record.options.get("channel"),
        "overwrite": record.options.get("overwrite", False),
        "out": out,
        "progress": progress,
    }
    with _threads(record.runtime.get("threads")):
        if record.kind == "segment":
            return segment(
                img,
                record.prompt_map(),
                multimask=record.options.get("multimask", False),
                **record.tiling,
                **common,
            )
        if record.kind == "propagate":
            return propagate(img, record.prompt_map(), **(record.propagation or {}), **common)
    raise ProvenanceError(f"unknown record kind {record.kind!r}; expected 'segment' or 'propagate'")
