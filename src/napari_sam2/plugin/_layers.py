"""Layer <-> engine conversions: an image layer's axes, clicks and boxes as plane prompts.

napari gives coordinates in a layer's *data* space, ordered like its axes (..., z, y, x). Two layers
(the prompts and the image) may differ in ``scale``/``translate`` (and affine), so a click is taken to
world space with the prompts layer's transform and back with the image layer's inverse
(:func:`to_image_coords`); napari's own transforms do the arithmetic. For a multiscale image the data
space is level 0, which is what the engine segments.

After that everything is in image pixels: leading frame axes (``t``/``z``), then (row, col).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..engine import ImageSource, Prompt, open_image

__all__ = [
    "LayerError",
    "ImageGeometry",
    "level0",
    "image_geometry",
    "image_source",
    "stack_axis_hint",
    "to_image_coords",
    "current_frame",
    "frame_prompt",
    "prompted_frames",
    "box_on_frame",
    "raw_layer",
    "same_layer",
]

_TIME_LABELS = ("t", "time", "frame", "frames")
_Z_LABELS = ("z", "depth", "slice", "slices", "plane", "planes")


class LayerError(ValueError):
    """A layer the plugin cannot use as asked; the message says what to change."""


@dataclass(frozen=True)
class ImageGeometry:
    """What the engine needs to know about an image layer.

    Attributes:
        axes: "yx", "zyx", "tyx" or "tzyx" (frame axes first, then rows and columns).
        rgb: the layer is RGB(A): its data has a trailing colour axis not counted in ``shape``.
        shape: level-0 shape without the colour axis, ``frame_shape + (H, W)``; labels have this shape.
    """

    axes: str
    rgb: bool
    shape: tuple[int, ...]

    @property
    def frame_axes(self) -> str:
        return self.axes[:-2]

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self.shape[:-2]

    @property
    def plane_hw(self) -> tuple[int, int]:
        return self.shape[-2], self.shape[-1]


def raw_layer(layer: object) -> object:
    """The layer itself behind napari's ``PublicOnlyProxy``: the viewer a plugin widget gets wraps
    every layer it hands out in a new proxy, so proxies of one layer differ in ``id`` and ``is``."""
    return getattr(layer, "__wrapped__", layer)


def same_layer(a: object, b: object) -> bool:
    """``a is b`` for layers, also through napari's proxies (see :func:`raw_layer`)."""
    return raw_layer(a) is raw_layer(b)


def level0(layer) -> object:
    """The finest array of an image layer (its only one if it is not multiscale)."""
    return layer.data[0] if layer.multiscale else layer.data


def image_geometry(layer, axis_labels: Sequence[str] = (), stack_axis: str | None = None) -> ImageGeometry:
    """Axes of an image layer: 2D "yx", 3D "zyx" or "tyx", 4D "tzyx".

    Args:
        layer: a napari Image layer (multiscale and RGB allowed).
        axis_labels: the viewer's ``dims.axis_labels``; for 3D data a time label on the leading
            axis (the layer's own ``axis_labels`` first) makes it a time series
            (:func:`stack_axis_hint`).
        stack_axis: "z" or "t" to say what the leading axis of 3D data is (overrides the labels).

    Raises:
        LayerError: 1D or 5D+ data, or an unknown ``stack_axis``.
    """
    data = level0(layer)
    rgb = bool(getattr(layer, "rgb", False))
    shape = tuple(int(s) for s in data.shape[: data.ndim - rgb])
    nd = len(shape)
    if nd == 2:
        axes = "yx"
    elif nd == 3:
        if stack_axis is None:
            stack_axis = stack_axis_hint(layer, axis_labels) or "z"
        if stack_axis not in ("z", "t"):
            raise LayerError(f"the stack axis must be 'z' or 't', got {stack_axis!r}")
        axes = stack_axis + "yx"
    elif nd == 4:
        axes = "tzyx"
    else:
        raise LayerError(
            f"layer {layer.name!r} has {nd} non-colour dimensions {shape}; the plugin segments 2D, 3D "
            "(z or t) and 4D (t, z) images: split the channels first (right-click the layer > Split Stack)"
        )
    return ImageGeometry(axes, rgb, shape)


def stack_axis_hint(layer, axis_labels: Sequence[str] = ()) -> str | None:
    """ "t" or "z" when an axis label names the leading axis of a 3D layer, else None.

    The layer's own ``axis_labels`` (napari >= 0.6) are read first, then the viewer's
    ``dims.axis_labels`` (whose last three belong to a 3D layer's axes). napari's default labels,
    numbers such as "-3" or "0", say nothing and are skipped.
    """
    for labels in (tuple(getattr(layer, "axis_labels", None) or ()), tuple(axis_labels or ())):
        if len(labels) < 3:
            continue
        label = str(labels[-3]).strip().lower()
        if label in _TIME_LABELS:
            return "t"
        if label in _Z_LABELS:
            return "z"
    return None


def image_source(layer, geometry: ImageGeometry) -> ImageSource:
    """The layer's data as a lazy :class:`ImageSource` (all levels of a multiscale layer, level 0 first).

    Nothing is read here beyond a small sample for the cache identity; dask and zarr stay lazy.
    """
    data = list(layer.data) if layer.multiscale else layer.data
    axes = geometry.axes + ("c" if geometry.rgb else "")
    return open_image(data, axes=axes, rgb=geometry.rgb or None)


def to_image_coords(coords: np.ndarray, source_layer, image_layer) -> np.ndarray:
    """(N, d) coordinates in ``source_layer``'s data space -> (N, image ndim) in the image's data space.

    Goes through world coordinates with napari's transforms, so differences in ``scale``,
    ``translate`` and affine between the two layers are respected.
    """
    coords = np.asarray(coords, dtype=np.float64).reshape(len(coords), -1)
    out = [np.asarray(image_layer.world_to_data(source_layer.data_to_world(p))) for p in coords]
    return np.asarray(out, dtype=np.float64).reshape(len(coords), image_layer.ndim)


def current_frame(world_point: Sequence[float], image_layer, geometry: ImageGeometry) -> tuple[int, ...]:
    """The frame index (one int per t/z axis) the viewer shows at ``world_point`` (``dims.point``).

    Raises:
        LayerError: the viewer shows a slice outside the image (e.g. another layer is larger).
    """
    nf = len(geometry.frame_axes)
    if nf == 0:
        return ()
    data = np.asarray(image_layer.world_to_data(np.asarray(world_point, dtype=np.float64)))
    frame = tuple(round(v) for v in data[:nf])
    for letter, i, n in zip(geometry.frame_axes, frame, geometry.frame_shape):
        if not 0 <= i < n:
            raise LayerError(
                f"the viewer shows {letter}={i}, outside layer {image_layer.name!r} ({letter} 0..{n - 1}); "
                "move the slider onto the image"
            )
    return frame


def _on_frame(coords: np.ndarray, frame: tuple[int, ...]) -> np.ndarray:
    """Which rows of (N, nf + 2) image coordinates lie on ``frame`` (rounded to the nearest slice)."""
    nf = len(frame)
    if not len(coords):
        return np.zeros(0, dtype=bool)
    return np.all(np.round(coords[:, :nf]) == np.asarray(frame, dtype=np.float64), axis=1)


def box_on_frame(boxes: Sequence[np.ndarray], frame: tuple[int, ...]) -> tuple[float, ...] | None:
    """The last box whose vertices all lie on ``frame``, as (row0, col0, row1, col1), or None."""
    nf = len(frame)
    for vertices in reversed(list(boxes)):
        v = np.asarray(vertices, dtype=np.float64)
        if len(v) and _on_frame(v, frame).all():
            rc = v[:, nf : nf + 2]
            (r0, c0), (r1, c1) = rc.min(axis=0), rc.max(axis=0)
            return (float(r0), float(c0), float(r1), float(c1))
    return None


def frame_prompt(
    points: np.ndarray,
    positive: np.ndarray,
    boxes: Sequence[np.ndarray],
    frame: tuple[int, ...],
) -> Prompt | None:
    """The clicks and box on one frame as a :class:`Prompt` in (row, col), or None if there is no
    positive click and no box there (negative clicks alone select nothing).

    Args:
        points: (N, nf + 2) image data coordinates.
        positive: (N,) bool, True for a positive click.
        boxes: box vertices, each (V, nf + 2) image data coordinates.
        frame: the frame index (nf ints).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, len(frame) + 2)
    on = _on_frame(points, frame)
    rc = points[on, len(frame) :]
    labels = np.asarray(positive, dtype=bool).reshape(-1)[on].astype(np.int64)
    box = box_on_frame(boxes, frame)
    if box is None and not labels.any():
        return None
    return Prompt(points=rc, labels=labels, box=box)


def prompted_frames(
    points: np.ndarray, positive: np.ndarray, boxes: Sequence[np.ndarray], nf: int
) -> dict[tuple[int, ...], Prompt]:
    """Every frame that has a positive click or a box, with its prompt (see :func:`frame_prompt`)."""
    frames = {tuple(round(v) for v in p[:nf]) for p in np.asarray(points).reshape(-1, nf + 2)}
    frames |= {tuple(round(v) for v in np.asarray(b)[0, :nf]) for b in boxes if len(b)}
    out = {}
    for frame in sorted(frames):
        prompt = frame_prompt(points, positive, boxes, frame)
        if prompt is not None:
            out[frame] = prompt
    return out
