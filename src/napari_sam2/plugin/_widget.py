"""The dock widget: clicks and boxes on an image layer -> objects in a Labels layer, in 2D, 3D and time.

Thin by design, and composed of parts: the Data box (:class:`._data.DataPicker`), the Model box
(:class:`._model_picker.ModelPicker`) and the model in use (:class:`._model_picker.ModelSlot`), the
prompt layers (:class:`._prompts.PromptLayers`), the action buttons and keys
(:class:`._actions.ActionPanel`), the progress/status strip and task runner
(:class:`._tasks.TaskPanel`), the Prompts box (:class:`._prompt_panel.PromptPanel`), the long
label-writing actions (:class:`._propagation.Propagation`), undo/redo (:class:`._history.History`)
and *Copy as Python* (:func:`._provenance.session_record`). The parts get only the small interfaces
they use (:mod:`._ports`) and never import this module. Coordinates go through :mod:`._layers`,
segmentation through :mod:`napari_sam2.api.session`, undo through :class:`._session.Session` and its
typed :class:`._session.Step` s. Every button calls a public method, so tests and scripts drive the
widget exactly as a user does.

Opening the widget creates (or adopts, when an earlier widget left them) the prompt layers over
the image and selects the prompts layer in add mode, so the first click on the image is a prompt;
new labels layers go below the prompt layers and never take the selection. The dock scrolls
(it fits a 1366 x 768 screen); the core flow is on top, the rest under *Advanced*. Closing the
dock or napari, removing a layer a task uses, or picking another image cancels the task cleanly.

Keys (on the viewer): Shift-S segment, Shift-F propagate, Shift-N next object, Shift-X clear
prompts, Shift-Z undo, Shift-Y redo, Shift-T (or T on the prompts layer) toggle click polarity,
Shift-C cancel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import napari.viewer
import numpy as np
from napari.layers import Image, Labels
from qtpy.QtCore import QEvent, Qt, QTimer
from qtpy.QtWidgets import QApplication, QComboBox, QFrame, QScrollArea, QToolButton, QVBoxLayout, QWidget

from ..api.session import RecordingWriter, segment_plane
from ..engine import ImagePredictor, PromptError
from ..engine.provenance import ProvenanceRecord, python_script
from ..engine.tracker import NOT_FOUND_HINT, asks_for_an_object
from ._actions import ActionPanel, bind_keys, unbind_keys
from ._data import DataPicker
from ._history import History
from ._label_edits import LayerLabelWriter, fit_ids, write_patch
from ._layers import ImageGeometry, frame_prompt, same_layer
from ._model_picker import DEMO, DEMO_NOTICE, ModelPicker, ModelSlot
from ._ports import Choices
from ._prompt_panel import PromptPanel
from ._prompts import PromptLayers
from ._propagation import Propagation
from ._provenance import session_record
from ._session import PromptSnapshot, Session, Step, StepKind, where
from ._tasks import USER_ERRORS, TaskPanel

__all__ = ["SAMPLE_KEY", "Sam2Widget"]

SAMPLE_KEY = "napari_sam2_sample"
"""The metadata key the plugin's sample layer carries (the demo model's notice skips it)."""


class Sam2Widget(QWidget):
    """SAM2 in napari: pick an image, a model and a labels layer; click, segment, propagate.

    Args:
        viewer: the napari viewer.
        threaded: run encoding and propagation in a thread worker (default: True unless the
            environment variable NAPARI_SAM2_THREADS=0); False runs them in the GUI thread.

    Attributes:
        model, model_name, predictor: the model in use (a ``Sam2Model``, or any predictor ``Backend``
            for segmentation only), its name and its image predictor (held by ``models``, a
            :class:`._model_picker.ModelSlot`); set it with :meth:`set_model` or the Load button.
        session: the current object, click polarity and the undo/redo stacks.
        runner: runs the long tasks; ``runner.threaded`` is the sync/threaded switch.
        data, model_picker, models, prompt_panel, actions, tasks, prompts, propagation, history:
            the parts (see the module docstring).
        points_layer, shapes_layer: the prompt layers (created by :meth:`ensure_prompt_layers`).
        last_report: the report of the latest propagation or segment-everything run.
    """

    def __init__(self, viewer: napari.viewer.Viewer, threaded: bool | None = None) -> None:
        super().__init__()
        self.viewer = viewer
        self.session = Session()
        self.last_report: Any = None
        self.demo_noticed = False
        self._closed = False
        self._docked = False
        self._hooks: list[tuple[Any, Callable]] = []
        self.data = DataPicker(viewer, on_labels_created=self._on_labels_created)
        self.model_picker = ModelPicker()
        self.actions = ActionPanel(lambda name: getattr(self, name)())
        self.tasks = TaskPanel(threaded)
        self.models = ModelSlot(self.model_picker, self.tasks, on_change=self.data.show_window)
        self.data.model_of = lambda: self.models.model  # MedSAM2 brings its authors' window
        self.prompts = PromptLayers(
            viewer, self.session, self.data.require_image, self._on_prompts_changed, self.toggle_polarity
        )
        self.prompt_panel = PromptPanel()
        self.history = History(
            self.session, self.prompts, self.data.existing_labels, self.tasks, self.set_object_id
        )
        choices = Choices(
            axis=self.actions.axis_combo.currentText,
            overwrite=self.prompt_panel.overwrite_check.isChecked,
            whole_stack=self.actions.everything_stack_check.isChecked,
        )
        self.propagation = Propagation(
            session=self.session, data=self.data, prompts=self.prompts, models=self.models, tasks=self.tasks,
            history=self.history, choices=choices, on_report=self._on_report,
        )  # fmt: skip
        self.runner = self.tasks.runner
        # the pickers and switches tests and scripts set directly
        self.image_combo, self.labels_combo = self.data.image_combo, self.data.labels_combo
        self.stack_axis_combo = self.data.stack_axis_combo
        self.model_combo, self.device_combo = self.model_picker.model_combo, self.model_picker.device_combo
        self.axis_combo, self.buttons = self.actions.axis_combo, self.actions.buttons
        self.status_label, self.progress_bar = self.tasks.status_label, self.tasks.progress_bar
        self.cancel_button, self.threaded_check = self.tasks.cancel_button, self.tasks.threaded_check
        panel = self.prompt_panel
        self.object_spin, self.polarity_button = panel.object_spin, panel.polarity_button
        self.live_check, self.overwrite_check = panel.live_check, panel.overwrite_check
        self._build()
        self._connect()
        self.refresh_layers()
        self.data.adopt_labels()
        self.data.show_window()
        if self.image_layer is not None:
            self.ensure_prompt_layers()

    def _build(self) -> None:
        content = QWidget()
        layout = QVBoxLayout(content)
        layout.setContentsMargins(4, 4, 4, 4)
        for part in (self.data, self.model_picker, self.prompt_panel, self.actions):
            layout.addWidget(part)
        self.advanced_button = QToolButton()
        self.advanced_button.setText("Advanced")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonTextBesideIcon)
        self.advanced_button.setArrowType(Qt.RightArrow)
        self.advanced_button.setToolTip(
            "Show or hide the advanced actions: overwrite, propagate labels, encode, segment everything, "
            "Copy as Python, background thread"
        )
        self.advanced_box = QFrame()
        more = QVBoxLayout(self.advanced_box)
        more.setContentsMargins(0, 0, 0, 0)
        more.addWidget(self.overwrite_check)
        more.addWidget(self.actions.advanced)
        more.addWidget(self.threaded_check)
        self.advanced_box.setVisible(False)
        layout.addWidget(self.advanced_button)
        layout.addWidget(self.advanced_box)
        layout.addStretch(1)
        for combo in content.findChildren(QComboBox):  # long layer or file names never widen the dock
            combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(8)
        self.scroll = QScrollArea()
        self.scroll.setWidgetResizable(True)
        self.scroll.setFrameShape(QFrame.NoFrame)
        self.scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarAlwaysOff)
        self.scroll.setWidget(content)
        # as wide as the content needs (no horizontal scrolling); as high as the screen allows
        bar = self.scroll.verticalScrollBar().sizeHint().width()
        self.scroll.setMinimumWidth(content.minimumSizeHint().width() + bar)
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.scroll, 1)
        outer.addWidget(self.tasks)  # progress and status stay in view while the rest scrolls

    def show_advanced(self, show: bool = True) -> None:
        """Open (or close) the *Advanced* section."""
        self.advanced_button.setChecked(show)
        self.advanced_button.setArrowType(Qt.DownArrow if show else Qt.RightArrow)
        self.advanced_box.setVisible(show)

    def _listen(self, emitter, callback: Callable) -> None:
        emitter.connect(callback)
        self._hooks.append((emitter, callback))

    def _connect(self) -> None:
        self.model_picker.load_button.clicked.connect(lambda: self.load_model())
        self.polarity_button.clicked.connect(lambda: self.toggle_polarity())
        self.prompt_panel.prompt_layers_button.clicked.connect(lambda: self.ensure_prompt_layers())
        self.advanced_button.toggled.connect(self.show_advanced)
        self.object_spin.valueChanged.connect(self.set_object_id)
        self.data.changed.connect(self._update_axes)
        self.data.changed.connect(self._on_image_changed)
        self._listen(self.viewer.layers.events.inserted, self._on_layer_inserted)
        self._listen(self.viewer.layers.events.removed, self._on_layer_removed)
        self._listen(self.viewer.dims.events.current_step, self._on_slice_changed)
        bind_keys(self.viewer, lambda name: getattr(self, name)())
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.close_session)
            self._hooks.append((app.aboutToQuit, self.close_session))
        self.destroyed.connect(lambda *_: self.close_session())

    # ------------------------------------------------------------------ lifetime
    def event(self, event: QEvent) -> bool:
        """Leaving the dock (napari's close button or ``remove_dock_widget``) ends the session."""
        if event.type() == QEvent.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.close_session()
        return super().event(event)

    def showEvent(self, event) -> None:
        """Once docked and shown, size the markers for the canvas that is left beside the dock."""
        super().showEvent(event)
        QTimer.singleShot(0, self._fit_markers)

    def _fit_markers(self) -> None:
        """:meth:`showEvent`'s deferred call: napari may have closed (and deleted this widget's Qt
        objects) before it runs, e.g. when the window closes during a propagation."""
        if self._closed:
            return
        try:
            self.prompts.fit_markers()
        except RuntimeError as err:  # "wrapped C/C++ object of type ... has been deleted"
            if "has been deleted" not in str(err):
                raise

    def close_session(self) -> None:
        """Cancel the running task and wait for it, and stop listening to the viewer (the layers and
        everything written stay). Runs once, when the dock or napari closes; uses no Qt widget."""
        if self._closed:
            return
        self._closed = True
        self.tasks.shutdown()
        for emitter, callback in self._hooks:
            with contextlib.suppress(TypeError, ValueError, RuntimeError):  # gone with the viewer or app
                emitter.disconnect(callback)
        self._hooks.clear()
        try:
            unbind_keys(self.viewer)
            self.prompts.detach()
        except (AttributeError, RuntimeError):  # the viewer is being torn down
            pass

    def _on_layer_inserted(self, event=None) -> None:
        self.refresh_layers()
        if self.points_layer is None and isinstance(getattr(event, "value", None), Image):
            self.ensure_prompt_layers()

    def _on_layer_removed(self, event=None) -> None:
        layer = getattr(event, "value", None)
        if layer is not None and self.tasks.cancel_if_using(layer, f": layer {layer.name!r} was removed"):
            self.tasks.info(
                f"{self.runner.label} cancelled: layer {layer.name!r} was removed (frames written stay)"
            )
        self.refresh_layers()

    def _on_image_changed(self) -> None:
        image = self.image_layer
        if (
            self.runner.busy
            and self.tasks.uses
            and not any(same_layer(image, used) for used in self.tasks.uses)
        ):
            self.tasks.cancel(": another image was picked")
            self.tasks.info(f"{self.runner.label} cancelled: another image was picked (frames written stay)")
        self.propagation.forget()

    def _on_labels_created(self, labels: Labels) -> None:
        """A new labels layer goes below the prompt layers and leaves the selection to the prompts."""
        self.prompts.raise_to_top()
        self.prompts.select()

    def _demo_notice(self, image: Image) -> None:
        """Once per widget: the demo model on data other than the sample says what it is."""
        name = self.model_name or (self.model_combo.currentText() if self.model is None else "")
        if self.demo_noticed or name != DEMO or image.metadata.get(SAMPLE_KEY):
            return
        self.demo_noticed = True
        self.tasks.info(DEMO_NOTICE)

    def refresh_layers(self) -> None:
        """Refill the image and labels pickers from the viewer's layers (keeps the selections)."""
        self.data.refresh()
        self.prompts.forget_removed()
        self._update_axes()

    def _update_axes(self) -> None:
        layer = self.image_layer
        self.stack_axis_combo.setEnabled(layer is not None and layer.ndim - bool(layer.rgb) == 3)
        self.actions.set_axes(self.data.frame_axes())

    # ------------------------------------------------------------------ state (see DataPicker)
    @property
    def image_layer(self) -> Image | None:
        return self.data.image_layer

    def geometry(self) -> ImageGeometry:
        """Axes and level-0 shape of the selected image layer (see :func:`._layers.image_geometry`)."""
        return self.data.geometry()

    def current_frame(self) -> tuple[int, ...]:
        """The frame index (t/z) of the selected image that the viewer shows."""
        return self.data.current_frame()

    def labels_layer(self, create: bool = True) -> Labels | None:
        """The output Labels layer: the one picked, or a new one the image's size (``create``)."""
        return self.data.labels_layer(create)

    @property
    def overwrite(self) -> bool:
        return self.overwrite_check.isChecked()

    @property
    def last_error(self) -> str:
        return self.tasks.last_error

    # ------------------------------------------------------------------ model (see ModelSlot)
    @property
    def model(self) -> Any:
        return self.models.model

    @property
    def model_name(self) -> str:
        return self.models.name

    @property
    def predictor(self) -> ImagePredictor | None:
        return self.models.predictor

    def choose_checkpoint(self, path: str | None = None) -> str | None:
        """Add a local checkpoint file to the model picker (a file dialog without ``path``)."""
        return self.model_picker.choose_checkpoint(path)

    def set_model(self, model: Any, name: str | None = None) -> None:
        """Use ``model`` (a ``Sam2Model`` or a predictor ``Backend``) from now on; a name or a
        checkpoint path is loaded first (as the Load button does)."""
        if isinstance(model, str):
            self.load_model(model)
            return
        self.models.set(model, name)

    def load_model(
        self, source: str | None = None, device: str | None = None, then: Callable | None = None
    ) -> None:
        """Load an official model (downloaded once, with progress), a checkpoint file or "demo"."""
        self.models.load(source, device, then)

    # ------------------------------------------------------------------ prompts (see PromptLayers)
    @property
    def points_layer(self):
        return self.prompts.points

    @property
    def shapes_layer(self):
        return self.prompts.shapes

    def ensure_prompt_layers(self):
        """Create (once) the prompts Points layer and the boxes Shapes layer over the image, or adopt
        the ones in the viewer, and select the prompts layer in add mode."""
        try:
            layers = self.prompts.ensure()
        except USER_ERRORS as err:
            self.tasks.error("Add prompt layers", err)
            return None
        self._prepare_labels()
        return layers

    def _prepare_labels(self) -> None:
        """Create the output labels layer now, with the prompt layers, unless one is picked: napari
        takes 0.3-2 s to add a labels layer of a large plane (the first one of a session the longest),
        which would otherwise stall the first click (docs/plugin.md). A picked layer that does not fit,
        or labels too large for memory, are reported when a click writes, not here."""
        with contextlib.suppress(*USER_ERRORS):
            self.data.labels_layer(create=True)

    def add_click(self, world: tuple[float, ...] | np.ndarray, positive: bool | None = None) -> None:
        """Add a click at a world position (as a mouse click in the prompts layer does)."""
        self.prompts.ensure()
        if positive is not None and positive != self.session.positive:
            self.toggle_polarity()
        self.prompts.add_click(world)

    def add_box(self, world_corners: np.ndarray) -> None:
        """Add a box from two opposite world corners (as drawing a rectangle in the boxes layer)."""
        self.prompts.add_box(world_corners)

    def toggle_polarity(self) -> bool:
        """Switch the next clicks between positive and negative; returns the new polarity."""
        self.session.positive = not self.session.positive
        self.prompts.set_defaults()
        self.prompt_panel.show_polarity(self.session.positive)
        return self.session.positive

    def set_object_id(self, obj_id: int) -> None:
        """Make ``obj_id`` the current object (new clicks and writes use it)."""
        self.session.object_id = int(obj_id)
        self.prompt_panel.show_object(obj_id)
        self.prompts.set_defaults()

    def _on_prompts_changed(self) -> None:
        """Live mode: a click segments its slice; on a slice the current object was propagated
        through, it re-propagates the slices that click now governs."""
        if not self.live_check.isChecked():
            return
        if self.runner.busy:
            self.tasks.queue(self._on_prompts_changed)
            return
        try:
            frame = self.current_frame()
        except USER_ERRORS:
            frame = None
        if frame and self.propagation.kept_covers(self.session.object_id, frame):
            self.propagate()
        else:
            self.segment(quiet=True)

    def snapshot(self) -> PromptSnapshot:
        """The prompt layers' contents now (for undo)."""
        return self.prompts.snapshot()

    def restore(self, snap: PromptSnapshot) -> None:
        """Put the prompt layers back as they were in ``snap`` (without re-segmenting)."""
        self.prompts.restore(snap)

    def object_prompts(self, obj_id: int | None = None) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Clicks (N, ndim) with polarity (N,) and boxes of one object, in the image's data coordinates."""
        return self.prompts.object_prompts(self.session.object_id if obj_id is None else obj_id)

    # ------------------------------------------------------------------ actions
    def segment(self, quiet: bool = False) -> None:
        """Segment the current object on the current slice from its clicks and box there.

        The plane's embedding is computed first if needed (in a worker); clicks that arrive
        meanwhile are handled once it has finished. ``quiet``: a live update, no message when
        there is nothing to segment.
        """
        if self.runner.busy:  # e.g. the slice is being encoded: segment (with the latest clicks) after it
            self.tasks.queue(lambda: self.segment(quiet))
            return
        try:
            image, geometry = self.data.require_image(), self.geometry()
            if self.points_layer is None:
                self.ensure_prompt_layers()
            frame = self.current_frame()
            prompt = frame_prompt(*self.object_prompts(), frame)
            if prompt is None:
                if not quiet:
                    raise PromptError(
                        f"object {self.session.object_id} has no positive click or box on this slice: click on "
                        "the object in the 'SAM2 prompts' layer (or draw a box in 'SAM2 boxes'), then Segment"
                    )
                return
            labels, source = self.labels_layer(), self.data.source(image, geometry)
            window = self.data.window(image, geometry)
        except USER_ERRORS as err:
            self.tasks.error("Segment", err)
            return
        self._demo_notice(image)
        if not self.models.ready(then=lambda: self.segment(quiet)):
            return
        obj = self.session.object_id
        before, after, predictor = self.prompts.last, self.snapshot(), self.predictor

        def work(progress, cancel):
            return segment_plane(predictor, source, frame, prompt, window, progress, cancel)

        def done(patch):
            pixels = int(np.count_nonzero(patch.logits > 0))
            found = pixels > 0 or not asks_for_an_object(prompt)  # a negative click may empty it
            if found:
                if widened := fit_ids(labels, obj):
                    self.tasks.info(widened)
                writer = write_patch(labels, frame, obj, patch, overwrite=self.overwrite)
            else:  # an empty answer to positive clicks writes nothing: the object keeps its pixels
                writer = RecordingWriter(LayerLabelWriter(labels, overwrite=self.overwrite))
            step = Step(
                StepKind.SEGMENT, obj, geometry.frame_axes, frame, prompts={frame: prompt}, window=window,
                prompts_before=before, prompts_after=after,
            )  # fmt: skip
            self.history.record(step, writer)
            if found:
                self.tasks.status(f"object {obj}: {pixels} pixels{where(geometry.frame_axes, frame)}")
            else:
                self.tasks.info(f"object {obj}{where(geometry.frame_axes, frame)}: {NOT_FOUND_HINT}")

        self.tasks.start("segment", work, done, "Segment", uses=(image, labels))

    def encode_current(self) -> None:
        """Compute the current slice's embedding now, so that the next click only decodes."""
        try:
            image, geometry = self.data.require_image(), self.geometry()
            frame, source = self.current_frame(), self.data.source(image, geometry)
            window = self.data.window(image, geometry)
        except USER_ERRORS as err:
            self.tasks.error("Encode", err)
            return
        if not self.models.ready(then=self.encode_current):
            return
        predictor = self.predictor

        def work(progress, cancel):
            predictor.set_image(source, frame=frame, window=window)
            return predictor.encode_all(progress, cancel)

        self.tasks.start("encode", work, lambda n: None, "Encode", uses=(image,))

    def _on_slice_changed(self, event=None) -> None:
        """In live, threaded mode: encode the new slice in the background, so the next click only decodes."""
        if not (self.live_check.isChecked() and self.runner.threaded and self.model is not None):
            return
        if self.runner.busy or self.image_layer is None:
            return
        self.encode_current()

    def propagate(self, axis: str | None = None) -> None:
        """Propagate the current object along z, t or "z+t" (3D through time) from its prompted slices.

        Without clicks or boxes for the object, its mask on the current slice in the labels layer
        seeds it. Frames stream into the labels as they finish; Cancel keeps the frames written.
        After a correction click on a propagated slice only the slices that click now governs are
        recomputed; pressing it again while it runs is ignored (with a message).
        """
        image = self.image_layer
        if image is not None and not self.runner.busy:
            self._demo_notice(image)
        self.propagation.propagate(axis)

    def propagate_all_labels(self, axis: str | None = None) -> None:
        """Seed every object of the current labels slice and propagate them all along ``axis``."""
        self.propagation.propagate_all_labels(axis)

    def segment_everything(self, whole_stack: bool | None = None, **options: Any) -> None:
        """Segment every object SAM2's automatic generator finds (``engine.automask.segment_everything``).

        By default (the button with "whole stack" unticked) on the current slice only: new objects
        get ids above every id in the labels and never take another object's voxels unless
        "Overwrite" is on; then "Propagate labels on slice" carries them through the stack.
        ``whole_stack`` (or the tick box): the engine's stack mode along the "Propagate along" axis,
        which finds objects on seed frames and tracks them (a SAM2 model is needed). One undo step;
        Cancel keeps what was written. ``options``: generator parameters (``points_per_side=16``).
        """
        self.propagation.segment_everything(whole_stack, **options)

    def next_object(self) -> int:
        """Finish the current object: its prompts are removed, the next free id becomes current."""
        return self.history.next_object()

    def clear_prompts(self) -> None:
        """Remove the current object's clicks and boxes (its labels stay; Undo brings them back)."""
        self.history.clear_prompts()

    def undo(self) -> None:
        """Undo the last step (a segmentation, a propagation, next object, clear prompts)."""
        if not self.runner.busy:
            self.propagation.forget()
        self.history.undo()

    def redo(self) -> None:
        """Redo the last undone step."""
        if not self.runner.busy:
            self.propagation.forget()
        self.history.redo()

    def cancel(self) -> None:
        """Stop the running task at its next frame or tile; finished frames stay written."""
        self.tasks.cancel()

    # ------------------------------------------------------------------ provenance
    def provenance_record(self) -> ProvenanceRecord:
        """This session as one call of the public API (see :func:`._provenance.session_record`)."""
        return session_record(self.session, self.data, self.models, self.overwrite)[0]

    def copy_as_python(self) -> str | None:
        """Put a Python script that makes these labels again on the clipboard (and return it).

        The script calls ``napari_sam2.segment`` or ``propagate`` with the current clicks and boxes
        (:func:`napari_sam2.engine.provenance.python_script`); what it cannot redo is said in the
        notification.
        """
        try:
            record, caveats = session_record(self.session, self.data, self.models, self.overwrite)
        except USER_ERRORS as err:
            self.tasks.error("Copy as Python", err)
            return None
        script = python_script(record)
        QApplication.clipboard().setText(script)
        note = f" (note: {'; '.join(caveats)})" if caveats else ""
        self.tasks.info(f"the Python script is on the clipboard{note}")
        return script

    # ------------------------------------------------------------------ plumbing
    def _on_report(self, report: Any) -> None:
        self.last_report = report
