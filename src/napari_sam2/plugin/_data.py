"""The "Data" box of the widget: which image to segment, what its 3D axis is, and where labels go.

:class:`DataPicker` keeps the pickers in step with the viewer's layers and answers the questions
every action asks first: the image layer, its geometry (:func:`._layers.image_geometry`), the frame
the viewer shows, the engine's lazy source for it, and the output Labels layer (checked, or created
the image's size).
"""

from __future__ import annotations

from typing import Any

import napari.viewer
import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QLabel

from ._layers import (
    ImageGeometry,
    LayerError,
    current_frame,
    image_geometry,
    image_source,
    stack_axis_hint,
)

__all__ = ["NEW_LABELS", "DataPicker"]

NEW_LABELS = "(new labels layer)"


class DataPicker(QGroupBox):
    """Image, 3D stack axis and Labels pickers.

    Signals:
        changed(): the image or the stack axis changed (the frame axes may differ now).
    """

    changed = Signal()

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__("Data")
        self.viewer = viewer
        self._sources: dict[tuple, Any] = {}
        self._watched: Image | None = None  # the image whose contrast limits the Intensity line follows
        form = QFormLayout(self)
        self.image_combo = QComboBox()
        self.stack_axis_combo = QComboBox()
        self.stack_axis_combo.addItems(["z", "t"])
        self.labels_combo = QComboBox()
        self.window_label = QLabel("")
        self.window_label.setWordWrap(True)
        self.window_label.setToolTip(
            "The model sees the image through the layer's contrast limits. A NIfTI/NRRD/DICOM volume opened "
            "with napari-sam2 starts with a CT preset (CT) or robust percentiles (other); change the "
            "contrast limits to change the window."
        )
        form.addRow("Image", self.image_combo)
        form.addRow("3D stack axis", self.stack_axis_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Intensity", self.window_label)
        self.image_combo.currentIndexChanged.connect(lambda _: self._follow_axis_labels())
        self.image_combo.currentIndexChanged.connect(lambda _: self.changed.emit())
        self.image_combo.currentIndexChanged.connect(lambda _: self.update_window_text())
        self.stack_axis_combo.currentIndexChanged.connect(lambda _: self.changed.emit())

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
        if self.image_layer is not before:  # a newly picked image; a user's choice for it is kept
            self._follow_axis_labels()
        self.update_window_text()

    def update_window_text(self) -> None:
        """Say which intensity window the picked image gives the model (a medical preset, or the
        contrast limits)."""
        layer = self.image_layer
        if layer is not self._watched:
            if self._watched is not None:
                self._watched.events.contrast_limits.disconnect(self._on_limits)
            if layer is not None:
                layer.events.contrast_limits.connect(self._on_limits)
            self._watched = layer
        if layer is None:
            self.window_label.setText("")
            return
        limits = tuple(float(v) for v in layer.contrast_limits)
        meta = (layer.metadata or {}).get("napari_sam2_medical")
        if meta and [float(v) for v in meta.get("window", [])] == list(limits):
            self.window_label.setText(meta["window_text"])
        else:
            self.window_label.setText(f"contrast limits {limits[0]:g}..{limits[1]:g}")

    def _on_limits(self, event: Any = None) -> None:
        self.update_window_text()

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
        key = (id(layer), id(layer.data), geometry.axes)
        if key not in self._sources:
            self._sources = {key: image_source(layer, geometry)}  # keep only the current image's source
        return self._sources[key]

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
        data = np.zeros(geometry.shape, np.uint32)
        medical = {k: v for k, v in (image.metadata or {}).items() if k.startswith("napari_sam2_")}
        layer = self.viewer.add_labels(  # a medical image's geometry goes along, for the NIfTI writer
            data,
            name=f"{image.name} SAM2 labels",
            scale=image.scale,
            translate=image.translate,
            metadata=medical,
        )
        self.labels_combo.setCurrentText(layer.name)
        return layer

    def existing_labels(self) -> Labels | None:
        """The picked Labels layer if there is an image and a usable one (never creates one)."""
        return self.labels_layer(create=False) if self.image_layer is not None else None
