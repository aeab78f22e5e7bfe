"""The prompt layers: a Points layer for clicks and a Shapes layer for boxes, over the image layer.

Each click carries two features, ``positive`` (its polarity) and ``object_id``; each box an
``object_id``. :class:`PromptLayers` creates the layers once (or adopts the ones an earlier widget
made), keeps them above every other layer and the prompts layer selected in *add* mode, adds clicks
and boxes as the mouse does, colours clicks by polarity, and takes and restores :class:`~._session.PromptSnapshot` s for
undo. Coordinates stay in the layers' own data space until :meth:`PromptLayers.object_prompts`
maps them to the image's (see :func:`._layers.to_image_coords`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import napari.viewer
import numpy as np
from napari.layers import Image, Points, Shapes
from napari.layers.base._base_constants import ActionType

from ._layers import image_geometry, to_image_coords
from ._session import PromptSnapshot, Session

__all__ = [
    "POSITIVE_COLOR",
    "NEGATIVE_COLOR",
    "BOX_COLOR",
    "MARKER_PIXELS",
    "POINTS_NAME",
    "SHAPES_NAME",
    "PromptLayers",
    "marker_size",
    "rgba",
]

POSITIVE_COLOR = "#00e000"
NEGATIVE_COLOR = "#ff00ff"
BOX_COLOR = "#ffd000"
POINTS_NAME = "SAM2 prompts"
SHAPES_NAME = "SAM2 boxes"
MARKER_PIXELS = 10.0
"""Screen diameter of a click marker, in canvas pixels, when the image fills the view."""
MARKER_LIMITS = (6.0, 24.0)
"""The marker's screen diameter stays within these pixels at any zoom (napari's canvas_size_limits)."""
_DEFAULT_CANVAS = (600, 800)


def marker_size(
    plane_hw: tuple[int, int],
    yx_scale: tuple[float, float],
    canvas_hw: tuple[int, int] = _DEFAULT_CANVAS,
    pixels: float = MARKER_PIXELS,
    margin: float = 0.05,
) -> float:
    """The Points ``size`` (layer data units) that draws ``pixels`` screen pixels at napari's fit zoom.

    napari fits a (H, W) plane of scale (sy, sx) into a (ch, cw) canvas with zoom
    ``(1 - margin) * min(ch / (H sy), cw / (W sx))`` canvas pixels per world unit, and draws a point
    of size ``s`` as ``s * scale * zoom`` pixels, so the size depends on the plane's pixel count,
    not on its physical scale.
    """
    h, w = (max(int(v), 1) for v in plane_hw)
    sy, sx = (abs(float(v)) or 1.0 for v in yx_scale)
    ch, cw = (max(int(v), 1) for v in canvas_hw)
    zoom = (1 - margin) * min(ch / (h * sy), cw / (w * sx))
    return float(pixels / (zoom * np.sqrt(sy * sx)))


def rgba(color: str) -> np.ndarray:
    """ "#rrggbb" -> (4,) float RGBA in [0, 1], alpha 1."""
    h = color.lstrip("#")
    return np.array([int(h[i : i + 2], 16) / 255 for i in (0, 2, 4)] + [1.0])


class PromptLayers:
    """The "SAM2 prompts" Points layer and the "SAM2 boxes" Shapes layer of one widget.

    Args:
        viewer: the napari viewer.
        session: the widget's session (current object id and click polarity).
        require_image: returns the image layer the prompts belong to (raises ``LayerError`` if none).
        on_change: called after the user added, moved or removed a click or box (not after the
            widget's own edits, e.g. :meth:`restore`).
        on_toggle: called by the ``T`` key on the prompts layer (toggles polarity).

    Attributes:
        points, shapes: the layers (None until :meth:`ensure`, or after the user deleted them).
        last: the prompts as they were after the latest recorded step (for undo).
    """

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        session: Session,
        require_image: Callable[[], Image],
        on_change: Callable[[], None],
        on_toggle: Callable[[], None],
    ) -> None:
        self.viewer = viewer
        self.session = session
        self.require_image = require_image
        self.on_change = on_change
        self.on_toggle = on_toggle
        self.points: Points | None = None
        self.shapes: Shapes | None = None
        self.last: PromptSnapshot | None = None
        self._suppress = 0  # > 0 while the widget itself edits the layers

    def forget_removed(self) -> None:
        """Drop references to layers the user deleted from the viewer."""
        if self.points is not None and self.points not in self.viewer.layers:
            self.points = None
        if self.shapes is not None and self.shapes not in self.viewer.layers:
            self.shapes = None

    def _canvas_hw(self) -> tuple[int, int]:
        # napari has no public canvas size; its private one warns from plugins and may go (then: default)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            try:
                return tuple(self.viewer.window._qt_viewer.canvas.size)  # (height, width)
            except (AttributeError, RuntimeError):  # no window (headless viewer model) or being closed
                return _DEFAULT_CANVAS

    def _find(self, kind: type, name: str, ndim: int, features: tuple[str, ...]):
        """An existing layer an earlier widget made (same name, kind, dimensions and features)."""
        for layer in self.viewer.layers:
            if (
                isinstance(layer, kind)
                and layer.name == name
                and layer.ndim == ndim
                and all(f in layer.features for f in features)
            ):
                return layer
        return None

    def ensure(self, select: bool = True) -> tuple[Points, Shapes]:
        """Create (once) the prompts Points layer and the boxes Shapes layer over the image, or adopt
        the ones an earlier widget left in the viewer; with ``select`` make the prompts layer the
        selected one, in add mode."""
        image = self.require_image()
        ndim = image.ndim
        plane_hw = image_geometry(image).plane_hw
        if self.points is None:
            self.points = self._find(Points, POINTS_NAME, ndim, ("positive", "object_id"))
            if self.points is None:
                size = marker_size(plane_hw, tuple(image.scale[-2:]), self._canvas_hw())
                self._suppress += 1
                try:
                    self.points = self.viewer.add_points(
                        np.zeros((0, ndim)),
                        ndim=ndim,
                        name=POINTS_NAME,
                        scale=image.scale,
                        translate=image.translate,
                        features={"positive": np.zeros(0, bool), "object_id": np.zeros(0, np.int64)},
                        face_color=POSITIVE_COLOR,
                        border_color="white",
                        size=size,
                        canvas_size_limits=MARKER_LIMITS,
                    )
                finally:
                    self._suppress -= 1
            self.points.events.data.connect(self._on_data)
            self.points.bind_key("T", lambda layer: self.on_toggle(), overwrite=True)
        if self.shapes is None:
            self.shapes = self._find(Shapes, SHAPES_NAME, ndim, ("object_id",))
            if self.shapes is None:
                width = marker_size(plane_hw, tuple(image.scale[-2:]), self._canvas_hw(), pixels=2.0)
                self.shapes = self.viewer.add_shapes(
                    ndim=ndim,
                    name=SHAPES_NAME,
                    scale=image.scale,
                    translate=image.translate,
                    features={"object_id": np.zeros(0, np.int64)},
                    edge_color=BOX_COLOR,
                    face_color="transparent",
                    edge_width=width,
                )
            self.shapes.events.data.connect(self._on_data)
        self.set_defaults()
        self.raise_to_top()
        if select:
            self.select()
        if self.last is None:
            self.last = self.snapshot()
        return self.points, self.shapes

    def fit_markers(self) -> None:
        """Size the click markers (and box edges) for the canvas as it is now (e.g. once the dock has
        taken its width), so they are :data:`MARKER_PIXELS` wide when the image fills the view."""
        try:
            image = self.require_image()
        except ValueError:  # LayerError: no image
            return
        plane_hw, yx = image_geometry(image).plane_hw, tuple(image.scale[-2:])
        if self.points is not None:
            size = marker_size(plane_hw, yx, self._canvas_hw())
            self.points.current_size = size
            if len(self.points.data):
                self.points.size = size
        if self.shapes is not None and not len(self.shapes.data):
            self.shapes.current_edge_width = marker_size(plane_hw, yx, self._canvas_hw(), pixels=2.0)

    def raise_to_top(self) -> None:
        """Put the boxes, then the prompts layer, above every other layer (markers over labels)."""
        layers = self.viewer.layers
        for layer in (self.shapes, self.points):
            if layer is not None and layer in layers:
                i = layers.index(layer)
                if i != len(layers) - 1:
                    layers.move(i, len(layers))

    def select(self) -> None:
        """Make the prompts layer the selected layer, in add mode (the next click adds a prompt)."""
        if self.points is None or self.points not in self.viewer.layers:
            return
        self.viewer.layers.selection.active = self.points
        if self.points.mode != "add":
            self.points.mode = "add"

    def detach(self) -> None:
        """Stop listening to the layers (the widget is closing; the layers and their data stay)."""
        for layer in (self.points, self.shapes):
            if layer is not None:
                layer.events.data.disconnect(self._on_data)
        if self.points is not None:
            self.points.keymap.pop("T", None)

    def set_defaults(self) -> None:
        """New clicks and boxes get the current object id (and clicks the current polarity)."""
        obj = self.session.object_id
        if self.points is not None:
            self.points.feature_defaults = {"positive": self.session.positive, "object_id": obj}
            self.points.selected_data = set()
            self.points.current_face_color = POSITIVE_COLOR if self.session.positive else NEGATIVE_COLOR
        if self.shapes is not None:
            self.shapes.feature_defaults = {"object_id": obj}

    def add_click(self, world: tuple[float, ...] | np.ndarray) -> None:
        """Add a click at a world position with the current polarity (as a mouse click does)."""
        points, _ = self.ensure(select=False)
        points.add(np.asarray(points.world_to_data(np.asarray(world, dtype=np.float64)))[None])

    def add_box(self, world_corners: np.ndarray) -> None:
        """Add a box from two opposite world corners (as drawing a rectangle does)."""
        _, shapes = self.ensure(select=False)
        a, b = (np.asarray(shapes.world_to_data(np.asarray(c, dtype=np.float64))) for c in world_corners)
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        corners = [lo.copy(), lo.copy(), hi.copy(), hi.copy()]
        corners[1][-1], corners[3][-1] = hi[-1], lo[-1]
        shapes.add_rectangles(np.array(corners))

    def recolor(self) -> None:
        """Colour every click by its polarity."""
        points = self.points
        if points is not None and len(points.data):
            positive = np.asarray(points.features["positive"], dtype=bool)
            points.face_color = np.where(positive[:, None], rgba(POSITIVE_COLOR), rgba(NEGATIVE_COLOR))

    def _on_data(self, event) -> None:
        if self._suppress or getattr(event, "action", ActionType.CHANGED) not in (
            ActionType.ADDED,
            ActionType.REMOVED,
            ActionType.CHANGED,
        ):
            return
        self.recolor()
        self.on_change()

    def snapshot(self) -> PromptSnapshot:
        """The prompt layers' contents now (for undo)."""
        points, shapes = self.points, self.shapes
        if points is None:
            try:
                ndim = self.require_image().ndim
            except ValueError:  # LayerError: no image layer
                ndim = 2
            return PromptSnapshot.empty(ndim)
        boxes, box_ids = (), ()
        if shapes is not None and len(shapes.data):
            boxes = tuple(np.array(d) for d in shapes.data)
            box_ids = tuple(int(i) for i in shapes.features["object_id"])
        return PromptSnapshot(
            np.array(points.data),
            np.asarray(points.features["positive"], dtype=bool).copy(),
            np.asarray(points.features["object_id"], dtype=np.int64).copy(),
            boxes,
            box_ids,
        )

    def restore(self, snap: PromptSnapshot) -> None:
        """Put the prompt layers back as they were in ``snap`` (without re-segmenting)."""
        points, shapes = self.ensure(select=False)
        self._suppress += 1
        try:
            points.data = snap.points
            points.features = {"positive": snap.positive, "object_id": snap.point_ids}
            self.recolor()
            if len(shapes.data):
                shapes.selected_data = set(range(len(shapes.data)))
                shapes.remove_selected()
            if snap.boxes:
                shapes.add_rectangles(list(snap.boxes))
                shapes.features = {"object_id": np.asarray(snap.box_ids, dtype=np.int64)}
        finally:
            self._suppress -= 1
        self.set_defaults()

    @staticmethod
    def without_object(snap: PromptSnapshot, obj_id: int) -> PromptSnapshot:
        """``snap`` less the clicks and boxes of object ``obj_id``."""
        keep = snap.point_ids != obj_id
        boxes = [(b, i) for b, i in zip(snap.boxes, snap.box_ids) if i != obj_id]
        return PromptSnapshot(
            snap.points[keep],
            snap.positive[keep],
            snap.point_ids[keep],
            tuple(b for b, _ in boxes),
            tuple(i for _, i in boxes),
        )

    def object_prompts(
        self, obj_id: int, snap: PromptSnapshot | None = None
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Clicks (N, ndim) with polarity (N,) and boxes of one object, in the image's data coordinates.

        ``snap``: take them from this snapshot of the layers (e.g. from the undo history) instead.
        """
        image = self.require_image()
        snap = self.snapshot() if snap is None else snap
        pick = snap.point_ids == obj_id
        coords = (
            to_image_coords(snap.points[pick], self.points, image)
            if pick.any()
            else np.zeros((0, image.ndim))
        )
        boxes = [
            to_image_coords(b, self.shapes, image) for b, i in zip(snap.boxes, snap.box_ids) if i == obj_id
        ]
        return coords, snap.positive[pick], boxes
