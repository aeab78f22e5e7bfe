"""The widget's task strip: progress bar, Cancel, status line, the threaded switch, and messages.

:class:`TaskPanel` owns the :class:`._workers.TaskRunner`. It runs one task at a time and queues the
latest request that arrives meanwhile (a click while the slice is being encoded is handled once the
embedding is ready). Messages go to the status line and to napari notifications; errors a user can
cause (:data:`USER_ERRORS`) are shown with what to do next, anything else as a bug with the
traceback in the log. The status line holds one line (at most :data:`STATUS_CHARS` characters, never
widening the dock); a longer message keeps its whole text behind *Details* and the line's tooltip.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ..engine import (
    DeviceError,
    FrameError,
    LabelError,
    PredictorError,
    PromptError,
    SourceError,
    TrackerError,
    WindowError,
)
from ..engine.automask import AutoMaskError
from ..engine.provenance import ProvenanceError
from ..model.checkpoint import CheckpointError
from ..model.weights import WeightsError
from ._layers import LayerError, same_layer
from ._workers import TaskRunner

__all__ = ["STATUS_CHARS", "USER_ERRORS", "TaskPanel", "one_line"]

log = logging.getLogger(__name__)

# errors a user can cause; their messages already say what to do next
USER_ERRORS = (
    LayerError,
    PromptError,
    PredictorError,
    TrackerError,
    LabelError,
    SourceError,
    WindowError,
    FrameError,
    DeviceError,
    CheckpointError,
    WeightsError,
    AutoMaskError,
    ProvenanceError,
)

STATUS_CHARS = 90
"""The longest status line; longer messages end in "..." and show whole under *Details*."""


def one_line(message: str, limit: int = STATUS_CHARS) -> str:
    """``message``'s first line, cut to ``limit`` characters (ending in "...") if longer."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    if len(first) > limit:
        first = first[: limit - 3].rstrip() + "..."
    return first


class TaskPanel(QWidget):
    """Runs the widget's long tasks and shows their progress and the messages.

    Args:
        threaded: passed to :class:`TaskRunner` (None: the ``NAPARI_SAM2_THREADS`` default).

    Attributes:
        runner: the task runner (``runner.threaded`` is the switch, also on the checkbox).
        last_error: the latest error message shown ("" if none).
        details: the whole text of the latest message that the status line shortened ("" if none).
    """

    def __init__(self, threaded: bool | None = None) -> None:
        super().__init__()
        self.runner = TaskRunner(threaded, parent=self)
        self.last_error = ""
        self.details = ""
        self.uses: tuple[Any, ...] = ()  # the layers the running task reads or writes
        self._progress_hook: Callable[[], None] | None = None  # the running task's on_progress
        self._queued: Callable[[], None] | None = None
        self.progress_bar = QProgressBar()
        self.progress_bar.setToolTip("Progress of the running task (frames, tiles or MiB downloaded)")
        self.status_label = QLabel("")
        self.status_label.setWordWrap(False)
        # one line that never widens the dock: its width follows the dock, not the text
        self.status_label.setSizePolicy(QSizePolicy.Ignored, QSizePolicy.Preferred)
        self.details_button = QPushButton("Details")
        self.details_button.setToolTip("Show the whole message of the status line")
        self.details_button.setVisible(False)
        self.cancel_button = QPushButton("Cancel (Shift-C)")
        self.cancel_button.setToolTip("Stop the running task at its next frame or tile; frames written stay")
        self.cancel_button.setEnabled(False)
        self.threaded_check = QCheckBox("Run in a background thread")
        self.threaded_check.setToolTip(
            "Run encoding and propagation in a background thread, so napari stays responsive (untick to debug)"
        )
        self.threaded_check.setChecked(self.runner.threaded)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.progress_bar, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        status = QHBoxLayout()
        status.addWidget(self.status_label, 1)
        status.addWidget(self.details_button)
        layout.addLayout(status)
        self.cancel_button.clicked.connect(self.cancel)
        self.details_button.clicked.connect(self.show_details)
        self.threaded_check.toggled.connect(lambda on: setattr(self.runner, "threaded", bool(on)))
        self.runner.started.connect(self._on_started)
        self.runner.progressed.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished)

    @property
    def busy(self) -> bool:
        return self.runner.busy

    @property
    def label(self) -> str:
        """The running task's label."""
        return self.runner.label

    def start(
        self,
        label: str,
        work: Callable[[Callable, Callable], Any],
        done: Callable[[Any], None],
        on_error: str | Callable[[BaseException], None],
        uses: tuple[Any, ...] = (),
        on_progress: Callable[[], None] | None = None,
    ) -> None:
        """Run ``work(progress, cancel)``, then ``done(result)``; on failure ``on_error(err)``, or
        :meth:`error` with ``on_error`` as the action's name. While another task runs, queue it
        (the latest request wins). ``uses``: the layers the task reads or writes (removing one
        cancels it, see :meth:`cancel_if_using`). ``on_progress()``: called in the GUI thread
        after each unit of work (e.g. to show the frames written so far)."""
        if self.runner.closed:
            return
        if self.runner.busy:
            self._queued = lambda: self.start(label, work, done, on_error, uses, on_progress)
            self.status(f"{label} waits for {self.runner.label}")
            return
        self.uses = tuple(uses)
        self._progress_hook = on_progress
        failed = on_error if callable(on_error) else (lambda err, what=on_error: self.error(what, err))

        def finish(result):
            try:
                done(result)
            finally:
                self._run_queued()

        def fail(err):
            try:
                failed(err)
            finally:
                self._run_queued()

        self.runner.start(label, work, finish, fail)

    def queue(self, request: Callable[[], None]) -> None:
        """Run ``request()`` when the running task has finished (replaces an earlier queued one)."""
        self._queued = request

    def _run_queued(self) -> None:
        queued, self._queued = self._queued, None
        if queued is not None:
            queued()

    def cancel(self, why: str = "") -> None:
        """Stop the running task at its next frame or tile; finished frames stay written."""
        self._queued = None
        if self.runner.busy:
            self.runner.cancel()
            self.status(f"cancelling {self.runner.label}{why}...")

    def cancel_if_using(self, layer: Any, why: str) -> bool:
        """Cancel the running task if it reads or writes ``layer``; True if it did."""
        if self.runner.busy and any(same_layer(layer, used) for used in self.uses):
            self.cancel(why)
            return True
        return False

    def shutdown(self) -> None:
        """The widget is closing: cancel the running task, drop the queued one, wait for the thread."""
        self._queued = None
        self.runner.shutdown()

    def _on_started(self, label: str) -> None:
        self.progress_bar.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        self.status(f"{label}...")

    def _on_progress(self, done: int, total: int, label: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.status(f"{label}: {done} / {total}")
        if self._progress_hook is not None:
            self._progress_hook()

    def _on_finished(self, label: str) -> None:
        self.uses, self._progress_hook = (), None
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        self.cancel_button.setEnabled(False)

    def status(self, message: str) -> None:
        """Show ``message`` on the status line only (its first line, shortened; the rest under Details)."""
        line = one_line(message)
        self.status_label.setText(line)
        self.status_label.setToolTip(message if line != message.strip() else "")
        self.details = message if line != message.strip() else ""
        self.details_button.setVisible(bool(self.details))

    def show_details(self) -> QMessageBox:
        """Open (without blocking) a box with the whole text of the shortened message."""
        box = QMessageBox(
            QMessageBox.Information, "SAM2", self.details or self.status_label.text(), parent=self
        )
        box.setTextInteractionFlags(Qt.TextSelectableByMouse)
        box.open()
        self._details_box = box
        return box

    def info(self, message: str) -> None:
        """Show ``message`` on the status line and as a napari notification."""
        self.status(message)
        show_info(message)

    def error(self, what: str, err: BaseException) -> None:
        """Show an error as a napari notification that says what to do next."""
        if isinstance(err, PredictorError) and "cancelled" in str(err):
            self.info(f"{what} cancelled")
            return
        if isinstance(err, USER_ERRORS):
            message = f"{what} failed: {err}"
            show = show_error
        elif isinstance(err, MemoryError | torch.cuda.OutOfMemoryError):
            message = f"{what} ran out of memory: choose a smaller model, or device 'cpu', and try again"
            show = show_error
        else:
            log.error("%s failed", what, exc_info=err)
            message = (
                f"{what} failed: {type(err).__name__}: {err}. This looks like a bug in napari-sam2; the "
                "traceback is in the terminal, please report it"
            )
            show = show_warning if isinstance(err, Warning) else show_error
        self.last_error = message
        self.status(message)
        show(message)
