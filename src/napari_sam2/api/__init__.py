"""Use cases: the one layer that the widget, the console functions, the CLI and the batch runner call.

* :mod:`.core` -- :func:`segment`, :func:`propagate`, :func:`replay` on arrays, files and napari layers,
  returning a :class:`SegmentationResult` with provenance;
* :mod:`._automatic` -- :func:`segment_everything` (no prompts);
* :mod:`._inputs` -- models, images, prompts and label targets made into engine objects;
* :mod:`.session` -- the interactive steps of a napari session (one plane, propagation, undoable writes);
* :mod:`.batch` -- many files, resumably, locally or on a dask.distributed cluster.

Imports :mod:`napari_sam2.engine` and :mod:`napari_sam2.model`, never napari, Qt or the training tools.
"""

from ._inputs import LOADS, load_model, resolve_model
from ._results import Cancelled, SegmentationResult
from .core import propagate, read_prompts, replay, segment, segment_everything

__all__ = [
    "LOADS",
    "Cancelled",
    "SegmentationResult",
    "load_model",
    "propagate",
    "read_prompts",
    "replay",
    "resolve_model",
    "segment",
    "segment_everything",
]
