"""What callers of the scripting API pass, made into engine objects: models (a name or checkpoint
file, loaded once per process and remembered for provenance), images (arrays, files, napari
layers), prompts (every form :mod:`napari_sam2.api` accepts) and the labels to write into.

napari layers are duck-typed (``.data``, ``.scale``, ``.translate``); napari is never imported.
"""

from __future__ import annotations

import os
import shutil
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr

from ..engine import models as _models
from ..engine.labels import LabelError, create_labels
from ..engine.prompts import Prompt, PromptError
from ..engine.provenance import ProvenanceError, file_sha256, guard_output, temporary_path
from ..engine.provenance.prompt_files import merge_prompts, prompts_from_table, read_prompts
from ..engine.sources import ImageSource
from ..engine.window_choice import WindowChoice, choose_window
from ..model import Sam2Model
from ..model.weights import UnknownWeightsError, cache_dir, get_weights_info

PromptKey = tuple[tuple[int, ...], int]

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
    try:
        info = get_weights_info(name)
    except UnknownWeightsError:
        return {"source": name, "sha256": None}
    cached = cache_dir() / info.filename
    sha = info.sha256 or (_checkpoint_sha(cached) if cached.is_file() else None)
    return {"source": info.name, "sha256": sha}


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


def resolve_model(model: Sam2Model | str | os.PathLike | None, device: Any) -> Sam2Model:
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


# ---------------------------------------------------------------------------------------------- images
def is_layer(obj: Any) -> bool:
    return all(hasattr(obj, a) for a in ("data", "scale", "translate")) and not isinstance(obj, np.ndarray)


def image_input(image: Any) -> tuple[Any, str | None, Any]:
    """-> (data for open_image, absolute path or None, the napari layer or None)."""
    if is_layer(image):
        path = getattr(getattr(image, "source", None), "path", None)
        return image.data, path, image
    if isinstance(image, (str, os.PathLike)):
        path = Path(image).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"image not found: {path}")
        return path, str(path.resolve()), None
    return image, None, None


def medical_geometry(source: ImageSource, layer: Any) -> Any:
    """The :class:`~napari_sam2.engine.medical.MedicalGeometry` of a NIfTI/NRRD/DICOM input: from the
    file, or from a napari layer that our reader made (``metadata["napari_sam2_geometry"]``). It is
    also set as ``source.medical`` so that the record's image entry holds it."""
    if source.medical is None and layer is not None:
        geometry = (getattr(layer, "metadata", None) or {}).get("napari_sam2_geometry")
        if geometry is not None and tuple(geometry.shape) == (*source.frame_shape, *source.plane_hw):
            source.medical = geometry
    return source.medical


def window_choice(window: Any, model: Any, geometry: Any, source: ImageSource) -> WindowChoice:
    """The run's intensity window and why (:func:`~napari_sam2.engine.window_choice.choose_window`):
    the one asked for, else the model's convention (MedSAM2), else a medical volume's preset (CT:
    a CT window), else robust percentiles of ``source``'s sample."""
    return choose_window(window, model=model, geometry=geometry, sample=source.sample_values)


def labels_target(labels: Any, out: Any, source: ImageSource, force: bool = False) -> tuple[Any, Any]:
    """-> (the array to write into, the layer to refresh or None). A ``.zarr`` ``out`` is streamed
    to its temporary name (:func:`discard_partial` removes it if the run does not finish)."""
    shape = (*source.frame_shape, *source.plane_hw)
    if labels is not None:
        layer = labels if is_layer(labels) else None
        target = labels.data if layer is not None else labels
        if tuple(target.shape) != shape:
            raise LabelError(f"labels of shape {tuple(target.shape)} do not fit the image's {shape}")
        return target, layer
    if out is not None:
        if str(out).lower().endswith((".nii", ".nii.gz", ".nrrd")) and source.medical is None:
            raise ProvenanceError(
                f"{Path(out).name}: NIfTI/NRRD labels are written in the geometry of a NIfTI, NRRD or DICOM "
                "input; this image has none, so write .tif or .zarr"
            )
        guard_output(out, force=force)
        if str(out).lower().endswith(".zarr"):
            tmp = temporary_path(out)
            if tmp.exists():
                shutil.rmtree(tmp)
            return create_labels(shape, path=tmp), None
    return create_labels(shape), None


def discard_partial(target: Any, out: Any, err: BaseException | None = None) -> None:
    """Remove the temporary ``.zarr`` of ``out`` that ``target`` streams into, after a failed or
    cancelled run (so no ``.NAME.zarr.tmp-PID`` folder is left behind); a ``Cancelled`` ``err``
    then carries no labels (their folder is gone)."""
    if out is None or not isinstance(target, zarr.Array):
        return
    tmp = temporary_path(out)
    root = getattr(target.store, "root", None)
    if root is not None and Path(root).absolute() == tmp.absolute():
        shutil.rmtree(tmp, ignore_errors=True)
        if getattr(err, "labels", None) is target:
            err.labels = None


def check_output(out: Any, force: bool) -> None:
    """Before any work: ``out`` can be written (see :func:`~napari_sam2.engine.provenance.guard_output`);
    leftovers of interrupted runs beside it are removed with a warning that says so."""
    if out is None:
        return
    for stale in guard_output(out, force=force):
        warnings.warn(f"removed {stale.name}, left by an interrupted run in {stale.parent}", stacklevel=3)


# ---------------------------------------------------------------------------------------------- prompts
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
    return merge_prompts(*maps)


def prompt_map(prompts: Any, frame: Any, image_layer: Any) -> dict[PromptKey, Prompt]:
    """Any accepted prompt form -> {(frame tuple, obj_id): Prompt}."""
    frame = () if frame is None else ((int(frame),) if np.ndim(frame) == 0 else tuple(int(f) for f in frame))
    if isinstance(prompts, (str, os.PathLike)):
        return read_prompts(prompts)
    if isinstance(prompts, Prompt):
        return {(frame, 1): prompts}
    if is_layer(prompts):
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
        if all(is_layer(p) for p in prompts):
            return _layer_prompts(prompts, image_layer)
    raise PromptError(
        f"cannot read prompts from {type(prompts).__name__}: give a Prompt, a list of them, a dict "
        "{obj_id: Prompt} or {(*frame, obj_id): Prompt}, a prompts file, or napari Points/Shapes layers"
    )


def check_ids(prompts: Mapping[PromptKey, Prompt]) -> None:
    """Object ids are positive ints (0 is the background), as the tracker requires."""
    for _, obj in prompts:
        if isinstance(obj, bool) or not isinstance(obj, (int, np.integer)) or obj < 1:
            raise PromptError(f"object ids are positive ints, got {obj!r}")


def check_frames(prompts: Mapping[PromptKey, Prompt], source: ImageSource) -> None:
    if not prompts:
        raise PromptError("no prompts: give at least one click or box")
    check_ids(prompts)
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
