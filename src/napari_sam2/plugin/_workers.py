"""Run the widget's long tasks in a napari thread worker, or synchronously, behind one switch.

A task is ``fn(progress, cancel) -> result``: the engine's progress/cancel protocol. In threaded mode
(the default) it runs in a napari ``FunctionWorker``; progress is emitted as a Qt signal, which Qt
queues to the GUI thread; ``on_done``/``on_error`` run in the GUI thread. In synchronous mode it runs
in the GUI thread and Qt events are processed at each progress report, so the Cancel button still
works (micro-sam had to fall back to synchronous runs with napari 0.5, their issue 740; the figures
for both modes are in docs/plugin.md).

The switch: ``TaskRunner(threaded=...)``, or the environment variable ``NAPARI_SAM2_THREADS=0``.

Closing: :meth:`TaskRunner.shutdown` (called when the widget leaves its dock or napari closes) asks
the task to stop at its next frame and waits for its thread; from then on the task's progress and
results go nowhere (the widgets that showed them are gone), while what it wrote stays whole.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QApplication

__all__ = ["THREADS_ENV_VAR", "TaskRunner", "default_threaded"]

THREADS_ENV_VAR = "NAPARI_SAM2_THREADS"

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]
Task = Callable[[Progress, Cancel], Any]


def default_threaded() -> bool:
    """True unless ``NAPARI_SAM2_THREADS`` is "0", "false" or "no"."""
    return os.environ.get(THREADS_ENV_VAR, "1").strip().lower() not in ("0", "false", "no")


class TaskRunner(QObject):
    """Runs one task at a time, threaded or not, and reports progress.

    Signals:
        progressed(done, total, label): after each unit of work (GUI thread).
        started(label), finished(label): around each task (GUI thread).
    """

    progressed = Signal(int, int, str)
    started = Signal(str)
    finished = Signal(str)

    def __init__(self, threaded: bool | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.threaded = default_threaded() if threaded is None else bool(threaded)
        self.label = ""
        self.last_seconds = 0.0
        self._cancel = threading.Event()
        self._idle = threading.Event()  # no task body is running (plain Python: usable after Qt deleted us)
        self._idle.set()
        self._closed = False
        self._task_thread: int | None = None
        self._busy = False
        self._worker = None

    @property
    def busy(self) -> bool:
        return self._busy

    def cancel(self) -> None:
        """Ask the running task to stop at its next progress check."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def closed(self) -> bool:
        """:meth:`shutdown` was called: tasks no longer start, results are dropped."""
        return self._closed

    def shutdown(self, timeout: float = 120.0) -> bool:
        """Cancel the running task and wait (at most ``timeout`` s) until its thread has stopped.

        Uses only plain Python state, so it may run while Qt destroys this object. Called from
        inside a synchronous task (a close event handled at a progress report), it only cancels.
        Returns False if the task was still running after ``timeout``.
        """
        self._closed = True
        self._cancel.set()
        if self._task_thread == threading.get_ident():
            return False
        return self._idle.wait(timeout)

    def start(
        self,
        label: str,
        fn: Task,
        on_done: Callable[[Any], None],
        on_error: Callable[[BaseException], None],
    ) -> None:
        """Run ``fn(progress, cancel)``; then ``on_done(result)`` or ``on_error(exception)``.

        Raises:
            RuntimeError: a task is already running (the widget checks :attr:`busy` first).
        """
        if self._busy:
            raise RuntimeError(f"{self.label} is still running; wait for it or press Cancel")
        if self._closed:
            return
        self._busy, self.label = True, label
        self._cancel.clear()
        self._idle.clear()
        self.started.emit(label)
        t0 = time.perf_counter()

        def progress(done: int, total: int) -> None:
            if self._closed:
                return
            try:
                self.progressed.emit(int(done), int(total), label)
            except RuntimeError:  # Qt deleted this object (napari closed): stop at the next frame
                self._closed = True
                self._cancel.set()
                return
            if not self.threaded:
                QApplication.processEvents()  # keeps the window and the Cancel button alive

        def body(progress: Progress, cancel: Cancel) -> Any:
            self._task_thread = threading.get_ident()
            try:
                return fn(progress, cancel)
            finally:
                self._task_thread = None
                self._idle.set()

        def done(result: Any) -> None:
            if self._end(t0):
                on_done(result)

        def error(err: BaseException) -> None:
            if self._end(t0):
                on_error(err)

        if not self.threaded:
            try:
                result = body(progress, self._cancel.is_set)
            except Exception as err:  # every task error goes to the notification, in both modes
                error(err)
            else:
                done(result)
            return

        from napari.qt.threading import create_worker

        worker = create_worker(body, progress, self._cancel.is_set, _start_thread=False, _ignore_errors=True)
        worker.returned.connect(done)
        worker.errored.connect(error)
        self._worker = worker
        worker.start()

    def wait(self, timeout: float = 60.0) -> bool:
        """Process events until the running task has finished (scripts and tests); False on timeout."""
        end = time.perf_counter() + timeout
        while self._busy and time.perf_counter() < end:
            QApplication.processEvents()
            time.sleep(0.005)
        return not self._busy

    def _end(self, t0: float) -> bool:
        """Mark the task finished; False once :meth:`shutdown` ran (its result then goes nowhere)."""
        self.last_seconds = time.perf_counter() - t0
        worker, self._busy, self._worker = self._worker, False, None
        if worker is not None:  # finished workers outlive the task: let go of its callbacks (and
            for signal in (worker.returned, worker.errored):  # the layers and arrays they hold)
                with contextlib.suppress(TypeError, RuntimeError):
                    signal.disconnect()
        if self._closed:
            return False
        try:
            self.finished.emit(self.label)
        except RuntimeError:  # deleted by Qt
            self._closed = True
            return False
        return True
