"""The small interfaces the widget's parts talk through, so that no part needs the whole widget.

:class:`~._widget.Sam2Widget` builds its parts and hands each one only what it uses: the
:class:`~._session.Session`, the :class:`~._prompts.PromptLayers`, a data picker
(:class:`ImagePicker`, met by :class:`~._data.DataPicker`), the task runner and status sink
(:class:`Tasks`, met by :class:`~._tasks.TaskPanel`), the model in use
(:class:`~._model_picker.ModelSlot`) and the switches the actions read (:class:`Choices`). The parts
(:mod:`._history`, :mod:`._propagation`, :mod:`._provenance`) import these and never
:mod:`._widget`, so the imports run one way: the widget imports its parts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from napari.layers import Image, Labels

from ._layers import ImageGeometry

__all__ = ["Choices", "ImagePicker", "StatusSink", "Tasks"]

Work = Callable[[Callable[[int, int], None], Callable[[], bool]], Any]
"""A long task: ``work(progress, cancel) -> result`` (the engine's progress/cancel protocol)."""


class StatusSink(Protocol):
    """Where the parts say what happened."""

    def status(self, message: str) -> None:
        """On the status line only."""

    def info(self, message: str) -> None:
        """On the status line and as a notification."""

    def error(self, what: str, err: BaseException) -> None:
        """A failed action, with what to do next."""


class Tasks(StatusSink, Protocol):
    """Runs one long task at a time (threaded or not) and shows its messages."""

    @property
    def busy(self) -> bool: ...

    @property
    def label(self) -> str:
        """The running task's label ("" if none)."""

    def start(
        self,
        label: str,
        work: Work,
        done: Callable[[Any], None],
        on_error: str | Callable[[BaseException], None],
        uses: tuple[Any, ...] = (),
        on_progress: Callable[[], None] | None = None,
    ) -> None: ...


class ImagePicker(Protocol):
    """The picked image, its geometry and lazy source, the frame shown, and the output labels."""

    def require_image(self) -> Image: ...

    def geometry(self) -> ImageGeometry: ...

    def current_frame(self) -> tuple[int, ...]: ...

    def source(self, layer: Image, geometry: ImageGeometry) -> Any: ...

    def labels_layer(self, create: bool = True) -> Labels | None: ...

    def window(
        self, layer: Image | None = None, geometry: ImageGeometry | None = None
    ) -> tuple[float, float]:
        """The model input window (low, high) for ``layer`` (default: the picked image)."""

    def existing_labels(self) -> Labels | None: ...


@dataclass(frozen=True)
class Choices:
    """The widget's switches that the long actions read when they start.

    Attributes:
        axis: the "Propagate along" choice ("z", "t", "z+t"; "" for a 2D image).
        overwrite: "Overwrite other objects" is on.
        whole_stack: "Segment everything: whole stack" is ticked.
    """

    axis: Callable[[], str]
    overwrite: Callable[[], bool]
    whole_stack: Callable[[], bool]
