"""SAM2 from napari's Python console (or any script): segment and propagate on layers or plain arrays.

In the console (``viewer`` is defined there)::

    from napari_sam2.plugin import console
    image, points = viewer.layers["nuclei"], viewer.layers["Points"]
    labels = console.segment(image, points, model="demo")          # a new labels array
    viewer.add_labels(labels, scale=image.scale, translate=image.translate)
    console.propagate(image, points, labels=viewer.layers["labels"], model="demo")  # in place

Points are taken in the image's data space: a Points layer's coordinates go through both layers'
``scale``/``translate``; a plain (N, ndim) array is already in the image's pixel coordinates, ordered
like its axes (..., z, y, x). Polarity comes from a ``positive`` feature (the widget's prompts
layer has it), from ``point_labels`` (1/0), or is positive for every point. Examples with output:
docs/console.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Points

from ..api.session import RecordingWriter, segment_plane
from ..api.session import propagate as _propagate
from ..engine import ImagePredictor, ImageSource, LabelError, PromptError, load_model, open_image
from ..engine.models import default_model
from ..engine.window_choice import choose_window
from ._data import default_window
from ._layers import ImageGeometry, image_geometry, image_source, prompted_frames, to_image_coords

__all__ = ["segment", "propagate", "write", "find_widget"]

_AXES = {2: "yx", 3: "zyx", 4: "tzyx"}
DISPLAY = "display"


def _open(image: Any, axes: str | None) -> tuple[ImageGeometry, ImageSource]:
    """(geometry, source) of an Image layer or an array."""
    if isinstance(image, Image):
        stack_axis = axes[0] if axes is not None and len(axes) == 3 else None
        geometry = image_geometry(image, stack_axis=stack_axis)
        return geometry, image_source(image, geometry)
    shape = tuple(int(s) for s in np.shape(image))
    axes = axes or _AXES.get(len(shape))
    if axes is None:
        raise PromptError(
            f"cannot tell the axes of a {len(shape)}D array {shape}; pass axes='zyx', 'tyx' or 'tzyx'"
        )
    source = open_image(image, axes=axes)
    return ImageGeometry(source.axes, source.rgb, (*source.frame_shape, *source.plane_hw)), source


def _window(image: Any, window: Any, model: Any, source: ImageSource) -> tuple[float, float]:
    """The model input window of a call: see ``window`` in :func:`segment`."""
    if isinstance(window, str) and window.strip().lower() == DISPLAY:
        if not isinstance(image, Image):
            raise PromptError(
                "window='display' reads an Image layer's contrast limits; for an array pass (low, high)"
            )
        low, high = (float(v) for v in image.contrast_limits)
        return (low, high)
    if window is None and isinstance(image, Image):
        return default_window(image, model, source.sample_values)[0]
    return choose_window(window, model=model, geometry=None, sample=source.sample_values).window.as_tuple()


def _points(
    points: Any, image: Any, point_labels: Sequence[int] | None, object_id: int | None, ndim: int
) -> tuple[np.ndarray, np.ndarray]:
    """(N, ndim) image coordinates and (N,) bool polarity."""
    if isinstance(points, Points):
        coords = np.asarray(points.data, dtype=np.float64)
        features = points.features
        keep = np.ones(len(coords), dtype=bool)
        if object_id is not None and "object_id" in features:
            keep = np.asarray(features["object_id"]) == object_id
        positive = (
            np.asarray(features["positive"], dtype=bool)
            if "positive" in features
            else np.ones(len(coords), bool)
        )
        coords, positive = coords[keep], positive[keep]
        if isinstance(image, Image) and len(coords):
            coords = to_image_coords(coords, points, image)
    else:
        coords = np.asarray(points, dtype=np.float64).reshape(-1, ndim)
        positive = np.ones(len(coords), dtype=bool)
    if point_labels is not None:
        positive = np.asarray(point_labels).reshape(-1) == 1
        if len(positive) != len(coords):
            raise PromptError(
                f"{len(coords)} points but {len(positive)} point_labels; give one 1/0 per point"
            )
    if coords.shape[1:] != (ndim,):
        raise PromptError(f"points have {coords.shape[1]} coordinates but the image has {ndim} axes")
    return coords, positive


def _model(model: Any) -> Any:
    if model is None:
        return default_model()
    if isinstance(model, str):
        return load_model(model)
    return model


def _labels_array(labels: Any, geometry: ImageGeometry) -> Any:
    data = labels.data if isinstance(labels, Labels) else labels
    if data is None:
        return np.zeros(geometry.shape, np.uint32)
    if tuple(data.shape) != geometry.shape:
        raise LabelError(f"labels have shape {tuple(data.shape)} but the image's level 0 is {geometry.shape}")
    return data


def _next_id(data: Any, object_id: int | None) -> int:
    return int(object_id) if object_id is not None else int(np.max(data)) + 1


def _boxes(boxes: Any, image: Any) -> list[np.ndarray]:
    if boxes is None:
        return []
    if hasattr(boxes, "data") and hasattr(boxes, "shape_type"):  # a Shapes layer
        return [
            to_image_coords(b, boxes, image) if isinstance(image, Image) else np.asarray(b)
            for b in boxes.data
        ]
    return [np.asarray(b, dtype=np.float64) for b in boxes]


def _prompted(image, geometry, points, boxes, point_labels, object_id) -> dict:
    """{frame: Prompt} of the slices with a positive click or a box (points and boxes as the
    public functions take them)."""
    nd = len(geometry.shape)
    coords, positive = _points(
        points if points is not None else np.zeros((0, nd)), image, point_labels, object_id, nd
    )
    return prompted_frames(coords, positive, _boxes(boxes, image), len(geometry.frame_axes))


def segment(
    image: Any,
    points: Any = None,
    *,
    labels: Any = None,
    boxes: Any = None,
    point_labels: Sequence[int] | None = None,
    model: Any = None,
    object_id: int | None = None,
    overwrite: bool = False,
    axes: str | None = None,
    window: Any = None,
) -> np.ndarray:
    """Segment one object on every slice that has a positive click or a box.

    Args:
        image: a napari Image layer (scale, translate, multiscale and dask/zarr data respected) or an
            array (numpy, dask, zarr) with axes ``axes`` (default by ndim: yx, zyx, tzyx).
        points: a Points layer or an (N, ndim) array of image pixel coordinates (None: boxes only).
        labels: a Labels layer or an integer array of the image's shape, written in place; None:
            a new uint32 array.
        boxes: a Shapes layer of rectangles, or a list of (V, ndim) vertex arrays.
        point_labels: 1 (positive) / 0 (negative) per point, overriding the layer's polarity.
        model: a ``Sam2Model``, a name for :func:`load_model` ("demo", "sam2.1_hiera_tiny", a path),
            or None for the default (cached official weights, else the demo model).
        object_id: the id written; default: one more than the largest id in ``labels``.
        overwrite: let the object take voxels of other objects (default: never).
        window: the model input window for the whole dataset. None (default): for an Image layer
            the widget's default (the model's own window -- MedSAM2's, the demo model's --, else the
            medical reader's preset, else the dataset window; :func:`._data.default_window`), for
            an array the API's (:func:`napari_sam2.engine.window_choice.choose_window`);
            "display": the layer's contrast limits now; else (low, high), a CT preset name or
            "auto" (robust percentiles).

    Returns:
        The labels array (the layer's data when ``labels`` is a layer; the layer is refreshed).
    """
    geometry, source = _open(image, axes)
    frames = _prompted(image, geometry, points, boxes, point_labels, object_id)
    if not frames:
        raise PromptError("no positive click or box: give at least one positive point or a box")
    data = _labels_array(labels, geometry)
    obj = _next_id(data, object_id)
    model = _model(model)
    window = _window(image, window, model, source)
    predictor = ImagePredictor(model)
    writer = RecordingWriter(data, overwrite=overwrite)
    for frame, prompt in frames.items():
        writer.write(frame, {obj: segment_plane(predictor, source, frame, prompt, window)})
    if isinstance(labels, Labels):
        labels.refresh()
    return data


def propagate(
    image: Any,
    points: Any = None,
    *,
    labels: Any = None,
    boxes: Any = None,
    point_labels: Sequence[int] | None = None,
    model: Any = None,
    object_id: int | None = None,
    axis: str | None = None,
    overwrite: bool = False,
    axes: str | None = None,
    window: Any = None,
) -> np.ndarray:
    """Segment one object from its clicks/boxes and propagate it along ``axis`` through the stack.

    Every prompted slice is a keyframe; the object is tracked outward in both directions from each.
    Without points or boxes, the object's existing mask in ``labels`` on its largest slice seeds it
    (``object_id`` required then). For (t, z) data the clicks must share the other axis' index (the
    time point when ``axis="z"``). Other arguments as in :func:`segment`; ``axis``: "z" (default
    when there is one) or "t".

    Returns:
        The labels array, written in place when given.
    """
    geometry, source = _open(image, axes)
    fa = geometry.frame_axes
    if not fa:
        raise PromptError("a 2D image has no z or t axis to propagate along; use segment()")
    axis = axis or ("z" if "z" in fa else "t")
    if axis not in fa:
        raise PromptError(f"the image has axes {geometry.axes!r}; propagate along one of {list(fa)}")
    data = _labels_array(labels, geometry)
    frames = _prompted(image, geometry, points, boxes, point_labels, object_id)
    k = fa.index(axis)
    masks = {}
    if frames:
        first = next(iter(frames))
        fixed = {a: first[i] for i, a in enumerate(fa) if a != axis}
        if any(f[i] != first[i] for f in frames for i, a in enumerate(fa) if a != axis):
            raise PromptError(
                f"propagating along {axis} needs every click on the same {''.join(fixed)} index"
            )
        obj = _next_id(data, object_id)
    else:
        if object_id is None:
            raise PromptError(
                "give points or boxes, or the object_id of an object already in labels to seed from"
            )
        obj = int(object_id)
        areas = (np.asarray(data) == obj).reshape(*geometry.frame_shape, -1).sum(-1)
        if not areas.any():
            raise PromptError(f"object {obj} is not in the labels: give points or boxes")
        best = np.unravel_index(int(np.argmax(areas)), areas.shape)
        fixed = {a: int(best[i]) for i, a in enumerate(fa) if a != axis}
        masks = {int(best[k]): np.asarray(data[tuple(int(i) for i in best)]) == obj}
    model = _model(model)
    window = _window(image, window, model, source)
    writer = RecordingWriter(data, overwrite=overwrite)
    _propagate(
        model, source, writer, obj, axis=axis, fixed=fixed,
        prompts={f[k]: p for f, p in frames.items()}, masks=masks, window=window,
    )  # fmt: skip
    if isinstance(labels, Labels):
        labels.refresh()
    return data


def write(
    labels: Any, mask: np.ndarray, *, object_id: int, index: tuple[int, ...] = (), overwrite: bool = False
) -> int:
    """Write a (H, W) bool mask as ``object_id`` into one plane of ``labels`` (a Labels layer or an
    array); other objects' voxels are kept unless ``overwrite``. Returns the number of voxels changed.
    """
    data = labels.data if isinstance(labels, Labels) else labels
    edit = RecordingWriter(data, overwrite=overwrite).write(
        tuple(index), {int(object_id): np.asarray(mask, bool)}
    )
    if isinstance(labels, Labels):
        labels.refresh()
    return edit.changed


def find_widget(viewer: Any) -> Any:
    """The SAM2 dock widget of ``viewer`` (None if it is not open), to drive it from the console."""
    from ._widget import Sam2Widget

    for dock in getattr(viewer.window, "_dock_widgets", {}).values():
        inner = dock.widget()
        if isinstance(inner, Sam2Widget):
            return inner
    return None
