"""The widget's task strip: progress bar, Cancel, status line, the threaded switch, and messages.

:class:`TaskPanel` owns the :class:`._workers.TaskRunner`. It runs one task at a time and queues the
latest request that arrives meanwhile (a click while the slice is being encoded is handled once the
embedding is ready). Messages go to the status line and to napari notifications; errors a user can
cause (:data:`USER_ERRORS`) are shown with what to do next, anything else as a bug with the
traceback in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QCheckBox, QHBoxLayout, QLabel, QProgressBar, QPushButton, QVBoxLayout, QWidget

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
from ._layers import LayerError
from ._workers import TaskRunner

__all__ = ["USER_ERRORS", "TaskPanel"]

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


class TaskPanel(QWidget):
    """Runs the widget's long tasks and shows their progress and the messages.

    Args:
        threaded: passed to :class:`TaskRunner` (None: the ``NAPARI_SAM2_THREADS`` default).

    Attributes:
        runner: the task runner (``runner.threaded`` is the switch, also on the checkbox).
        last_error: the latest error message shown ("" if none).
    """

    def __init__(self, threaded: bool | None = None) -> None:
        super().__init__()
        self.runner = TaskRunner(threaded, parent=self)
        self.last_error = ""
        self._queued: Callable[[], None] | None = None
        self.progress_bar = QProgressBar()
        self.status_label = QLabel("")
        self.status_label.setWordWrap(True)
        self.cancel_button = QPushButton("Cancel (Shift-C)")
        self.cancel_button.setEnabled(False)
        self.threaded_check = QCheckBox("Run in a background thread")
        self.threaded_check.setChecked(self.runner.threaded)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.progress_bar, 1)
        row.addWidget(self.cancel_button)
        layout.addLayout(row)
        layout.addWidget(self.status_label)
        layout.addWidget(self.threaded_check)
        self.cancel_button.clicked.connect(self.cancel)
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
    ) -> None:
        """Run ``work(progress, cancel)``, then ``done(result)``; on failure ``on_error(err)``, or
        :meth:`error` with ``on_error`` as the action's name. While another task runs, queue it
        (the latest request wins)."""
        if self.runner.busy:
            self._queued = lambda: self.start(label, work, done, on_error)
            self.status_label.setText(f"{label} waits for {self.runner.label}")
            return
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

    def cancel(self) -> None:
        """Stop the running task at its next frame or tile; finished frames stay written."""
        if self.runner.busy:
            self.runner.cancel()
            self.status_label.setText(f"cancelling {self.runner.label}...")

    def _on_started(self, label: str) -> None:
        self.progress_bar.setRange(0, 0)
        self.cancel_button.setEnabled(True)
        self.status_label.setText(f"{label}...")

    def _on_progress(self, done: int, total: int, label: str) -> None:
        self.progress_bar.setRange(0, max(total, 1))
        self.progress_bar.setValue(done)
        self.status_label.setText(f"{label}: {done} / {total}")

    def _on_finished(self, label: str) -> None:
        self.progress_bar.setRange(0, 1)
        self.progress_bar.setValue(1)
        self.cancel_button.setEnabled(False)

    def status(self, message: str) -> None:
        """Show ``message`` on the status line only."""
        self.status_label.setText(message)

    def info(self, message: str) -> None:
        """Show ``message`` on the status line and as a napari notification."""
        self.status_label.setText(message)
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
        self.status_label.setText(message)
        show(message)
