"""The "Data" box of the widget: which image to segment, what its 3D axis is, and where labels go.

:class:`DataPicker` keeps the pickers in step with the viewer's layers and answers the questions
every action asks first: the image layer, its geometry (:func:`._layers.image_geometry`), the frame
the viewer shows, the engine's lazy source for it, and the output Labels layer (checked, or created
the image's size).

It also owns the *model input* window: by default one fixed window for the whole dataset, never
moved by the contrast slider (the window of the model's authors when they fix one -- MedSAM2's, or
the demo model's on an image that is not a medical volume, from
:func:`napari_sam2.engine.window_choice.model_window`, the rule the API uses too --, else a medical
volume's preset from napari-sam2's reader, e.g. a CT window, else
:func:`napari_sam2.engine.intensity.dataset_window` of a sample of the image, computed once), or,
when asked, the layer's display contrast limits; the line under the picker says which one is in
use, its numbers and why.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari.viewer
import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel

from ..engine.intensity import dataset_window
from ..engine.window_choice import model_window, window_convention
from ._label_edits import LABELS_DTYPE
from ._layers import (
    ImageGeometry,
    LayerError,
    current_frame,
    image_geometry,
    image_source,
    raw_layer,
    same_layer,
    stack_axis_hint,
)

__all__ = ["NEW_LABELS", "WINDOW_DATASET", "WINDOW_DISPLAY", "DataPicker", "default_window", "labels_name"]

NEW_LABELS = "(new labels layer)"
WINDOW_DATASET = "dataset window (fixed)"
WINDOW_DISPLAY = "display contrast"
_EAGER_VALUES = 2**26  # images up to this many values get their dataset window when picked


def labels_name(image: Image) -> str:
    """The name of the labels layer the widget makes for ``image`` (and adopts when it finds one)."""
    return f"{image.name} SAM2 labels"


class DataPicker(QGroupBox):
    """Image, 3D stack axis and Labels pickers.

    Signals:
        changed(): the image or the stack axis changed (the frame axes may differ now).
    """

    changed = Signal()

    def __init__(
        self, viewer: napari.viewer.Viewer, on_labels_created: Callable[[Labels], None] | None = None
    ) -> None:
        super().__init__("Data")
        self.viewer = viewer
        self.on_labels_created = on_labels_created
        self._sources: dict[tuple, Any] = {}
        self._windows: dict[tuple, tuple[tuple[float, float], str]] = {}  # default window, its line
        self.model_of: Callable[[], Any] = lambda: None
        """The model in use (the widget sets it), whose authors' window convention wins."""
        self._watched: Image | None = None  # the image whose contrast limits the window line follows
        form = QFormLayout(self)
        self.image_combo = QComboBox()
        self.image_combo.setToolTip("The image layer to segment (clicks anywhere in the viewer go to it)")
        self.stack_axis_combo = QComboBox()
        self.stack_axis_combo.addItems(["z", "t"])
        self.stack_axis_combo.setToolTip(
            "What the first axis of a 3D image is: z (slices) or t (time points)"
        )
        self.labels_combo = QComboBox()
        self.labels_combo.setToolTip(
            "Where masks are written: an existing labels layer of the image's size, or a new one"
        )
        self.window_combo = QComboBox()
        self.window_combo.addItems([WINDOW_DATASET, WINDOW_DISPLAY])
        self.window_combo.setToolTip(
            "Which intensities the model sees as black and white. Dataset window: one window from a sample "
            "of the whole image, fixed (the contrast slider does not change results). Display contrast: "
            "the layer's contrast limits, so moving the slider changes the next results"
        )
        self.window_label = QLabel("")
        self.window_label.setWordWrap(True)
        self.window_label.setToolTip(self.window_combo.toolTip())
        form.addRow("Image", self.image_combo)
        form.addRow("3D stack axis", self.stack_axis_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Model input", self.window_combo)
        form.addRow(self.window_label)
        self.image_combo.currentIndexChanged.connect(lambda _: self._follow_axis_labels())
        self.image_combo.currentIndexChanged.connect(lambda _: self.changed.emit())
        self.stack_axis_combo.currentIndexChanged.connect(lambda _: self.changed.emit())
        self.window_combo.currentIndexChanged.connect(lambda _: self.show_window())
        self.changed.connect(self.adopt_labels)
        self.changed.connect(self.show_window)

    def refresh(self) -> None:
        """Refill the image and labels pickers from the viewer's layers (keeps the selections)."""
        before = self.image_layer
        for combo, kind, extra in ((self.image_combo, Image, []), (self.labels_combo, Labels, [NEW_LABELS])):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems(extra + [layer.name for layer in self.viewer.layers if isinstance(layer, kind)])
            combo.setCurrentIndex(max(combo.findText(current), 0))
            combo.blockSignals(False)
        if not same_layer(self.image_layer, before):  # a newly picked image; a user's choice for it is kept
            self._follow_axis_labels()
        self.show_window()

    def _follow_axis_labels(self) -> None:
        """Set the 3D stack axis from the picked layer's axis labels when they name it ("t" for
        time, "z"); napari's numbered default labels ("-3") leave the choice as it is."""
        layer = self.image_layer
        if layer is None or layer.ndim - bool(getattr(layer, "rgb", False)) != 3:
            return
        hint = stack_axis_hint(layer, self.viewer.dims.axis_labels)
        if hint is not None and hint != self.stack_axis_combo.currentText():
            self.stack_axis_combo.setCurrentText(hint)

    @property
    def image_layer(self) -> Image | None:
        name = self.image_combo.currentText()
        found = [layer for layer in self.viewer.layers if layer.name == name and isinstance(layer, Image)]
        return found[0] if found else None

    def require_image(self) -> Image:
        """The picked image layer.

        Raises:
            LayerError: there is none.
        """
        layer = self.image_layer
        if layer is None:
            raise LayerError(
                "no image layer: open an image (or File > Open Sample > SAM2) and pick it under Data"
            )
        return layer

    def geometry(self) -> ImageGeometry:
        """Axes and level-0 shape of the picked image layer (see :func:`._layers.image_geometry`)."""
        layer = self.require_image()
        return image_geometry(layer, self.viewer.dims.axis_labels, self.stack_axis_combo.currentText())

    def frame_axes(self) -> str:
        """The picked image's t/z axes ("" without an image or for one it cannot use)."""
        if self.image_layer is None:
            return ""
        try:
            return self.geometry().frame_axes
        except LayerError:
            return ""

    def source(self, layer: Image, geometry: ImageGeometry):
        """The engine's lazy :class:`~napari_sam2.engine.ImageSource` of ``layer`` (kept while it is current)."""
        key = (id(raw_layer(layer)), id(layer.data), geometry.axes)
        if key not in self._sources:
            self._sources = {key: image_source(layer, geometry)}  # keep only the current image's source
        return self._sources[key]

    @property
    def uses_display_contrast(self) -> bool:
        return self.window_combo.currentText() == WINDOW_DISPLAY

    def window(
        self, layer: Image | None = None, geometry: ImageGeometry | None = None
    ) -> tuple[float, float]:
        """The model input window (low, high) for ``layer`` (default: the picked image).

        The default (:func:`default_window`) is computed once per image (and per model, when the
        model's own convention sets it) and kept; "display contrast" reads the layer's contrast
        limits now.
        """
        layer = self.require_image() if layer is None else layer
        if self.uses_display_contrast:
            low, high = (float(v) for v in layer.contrast_limits)
            self._show(
                f"contrast limits {low:g}..{high:g} (display contrast: the slider changes the results)"
            )
            return (low, high)
        key, _ = self._window_key(layer)
        if key not in self._windows:

            def sample() -> np.ndarray:  # read only when the window needs the data
                return self.source(layer, self.geometry() if geometry is None else geometry).sample_values()

            self._windows = {**self._windows, key: default_window(layer, self.model_of(), sample)}
        window, text = self._windows[key]
        self._show(text)
        return window

    def _window_key(self, layer: Image) -> tuple[tuple, str | None]:
        """The cache key of ``layer``'s default window, and the name of the model convention that
        sets it (None: the window does not depend on the model, and the key does not name it)."""
        model = self.model_of()
        convention = window_convention(model, _medical_geometry(layer))
        return (id(raw_layer(layer)), id(layer.data), id(model) if convention else None), convention

    def show_window(self) -> None:
        """Say which window the next action uses (computing a small image's dataset window now);
        with "display contrast" the line follows the picked image's contrast limits."""
        layer = self.image_layer
        if not (layer is None and self._watched is None) and not (
            layer is not None and self._watched is not None and raw_layer(layer) is raw_layer(self._watched)
        ):
            if self._watched is not None:
                self._watched.events.contrast_limits.disconnect(self._on_limits)
            if layer is not None:
                layer.events.contrast_limits.connect(self._on_limits)
            self._watched = layer
        if layer is None:
            self._show("")
            return
        try:
            geometry = self.geometry()
            key, convention = self._window_key(layer)
            if (
                self.uses_display_contrast
                or (convention is None and _preset(layer) is not None)
                or key in self._windows
                or int(np.prod(geometry.shape)) <= _EAGER_VALUES
            ):
                self.window(layer, geometry)
            else:
                whose = f"{convention}'s window" if convention else "dataset window"
                self._show(f"{whose}: fixed, computed at the first click")
        except (LayerError, ValueError) as err:  # an unusable image: the actions will say why
            self._show(f"no window: {err}"[:80])

    def _on_limits(self, event: Any = None) -> None:
        if self.uses_display_contrast:
            self.show_window()

    def _show(self, text: str) -> None:
        self.window_label.setText(f"window {text}" if text and text[0].isdigit() else text)

    def adopt_labels(self) -> None:
        """With '(new labels layer)' picked, pick the image's own SAM2 labels layer if it exists."""
        image = self.image_layer
        if image is None or self.labels_combo.currentText() != NEW_LABELS:
            return
        name = labels_name(image)
        if name in self.viewer.layers and isinstance(self.viewer.layers[name], Labels):
            self.labels_combo.setCurrentText(name)

    def current_frame(self) -> tuple[int, ...]:
        """The frame index (t/z) of the picked image that the viewer shows."""
        return current_frame(self.viewer.dims.point, self.require_image(), self.geometry())

    def labels_layer(self, create: bool = True) -> Labels | None:
        """The output Labels layer: the one picked, or a new one the image's size (``create``).

        Raises:
            LayerError: the picked layer does not match the image or cannot be written.
        """
        image, geometry = self.require_image(), self.geometry()
        name = self.labels_combo.currentText()
        if name != NEW_LABELS and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if layer.multiscale:
                raise LayerError(
                    f"labels layer {name!r} is multiscale; pick a single-scale labels layer or a new one"
                )
            if tuple(layer.data.shape) != geometry.shape:
                raise LayerError(
                    f"labels layer {name!r} has shape {tuple(layer.data.shape)} but the image's level 0 is "
                    f"{geometry.shape}; pick labels of the image's size or '{NEW_LABELS}'"
                )
            if not hasattr(layer.data, "__setitem__") or type(layer.data).__module__.startswith("dask"):
                raise LayerError(
                    f"labels layer {name!r} holds a read-only {type(layer.data).__name__}; load it into memory "
                    "(layer.data = np.asarray(layer.data)) or pick a new labels layer"
                )
            return layer
        if not create:
            return None
        try:
            data = np.zeros(geometry.shape, LABELS_DTYPE)  # shown by napari without conversion
        except MemoryError as err:
            size = np.prod(geometry.shape, dtype=np.float64) * np.dtype(LABELS_DTYPE).itemsize
            raise LayerError(
                f"a labels layer of {geometry.shape} ({size / 2**30:.1f} GiB) does not fit in memory; "
                "pick an existing labels layer, or crop the image"
            ) from err
        medical = {k: v for k, v in (image.metadata or {}).items() if k.startswith("napari_sam2_")}
        layer = self.viewer.add_labels(  # a medical image's geometry goes along, for the NIfTI writer
            data, name=labels_name(image), scale=image.scale, translate=image.translate, metadata=medical
        )
        self.labels_combo.setCurrentText(layer.name)
        if self.on_labels_created is not None:
            self.on_labels_created(layer)
        return layer

    def existing_labels(self) -> Labels | None:
        """The picked Labels layer if there is an image and a usable one (never creates one)."""
        return self.labels_layer(create=False) if self.image_layer is not None else None


def default_window(
    layer: Image, model: Any, sample: Callable[[], np.ndarray]
) -> tuple[tuple[float, float], str]:
    """The widget's default model input window for ``layer`` with ``model``, and the line the widget
    shows for it.

    In this order: the window of the model's authors
    (:func:`~napari_sam2.engine.window_choice.model_window`: MedSAM2's; the demo model's on an image
    that is not a medical volume), else the medical reader's preset, else
    :func:`~napari_sam2.engine.intensity.dataset_window` of ``sample()`` (the values of the whole
    dataset; ``sample`` is called only when a window needs the data). :meth:`DataPicker.window` keeps
    it per image; the console (:mod:`.console`) calls it too.
    """
    choice = model_window(model, _medical_geometry(layer), sample)
    if choice is not None:  # the model's own convention: said whose it is
        return choice.window.as_tuple(), f"{choice.text} (fixed)"
    preset = _preset(layer)
    if preset is not None:  # the reader's medical window, said in the reader's words
        return preset[0], f"{preset[1]} (fixed)"
    low, high = dataset_window(sample()).as_tuple()
    return (low, high), f"{_num(low)} - {_num(high)} (dataset: fixed; the slider only changes the display)"


def _num(value: float) -> str:
    """A window bound for people: whole numbers from 100 on, else 4 significant digits."""
    return f"{value:.0f}" if float(value).is_integer() or abs(value) >= 100 else f"{value:.4g}"


def _medical_geometry(layer: Image) -> Any:
    """The geometry napari-sam2's medical reader attached to ``layer`` (None: not a medical volume)."""
    return (layer.metadata or {}).get("napari_sam2_geometry")


def _preset(layer: Image) -> tuple[tuple[float, float], str] | None:
    """The window napari-sam2's medical reader chose for ``layer`` and its description, if any."""
    meta = (layer.metadata or {}).get("napari_sam2_medical") or {}
    window = meta.get("window")
    if window is None or len(window) != 2:
        return None
    return (float(window[0]), float(window[1])), str(meta.get("window_text", "preset"))
