"""napari-sam2: Segment Anything 2 (SAM2) for napari, for large microscopy images and volumes.

Public API (the command line ``napari-sam2`` drives the same calls; see docs/api.md):

* :func:`load_model` -- an official model by name (downloaded once), a checkpoint file or "demo";
* :func:`segment`, :func:`propagate` -- prompts on planes -> labels, or propagated through z/t, on
  arrays, files or napari layers, returning a :class:`SegmentationResult` with provenance;
* :func:`segment_everything` -- automatic instance segmentation (no prompts) of a plane or a stack;
* :func:`replay` -- re-run the provenance a labels file carries; :func:`read_prompts` -- prompt files;
* :func:`open_image` -- numpy, dask, zarr, OME-Zarr or TIFF, read lazily;
* :class:`ImagePredictor` -- planes of any size (tiled at native resolution) + prompts -> masks;
* :class:`Prompt` and :class:`Tracker` -- clicks/boxes/masks on frames, propagated by SAM2;
* :func:`select_device` -- the device choice used everywhere (CUDA, then MPS, then CPU).
"""

from importlib.metadata import PackageNotFoundError, version

from .api import (
    SegmentationResult,
    load_model,
    propagate,
    read_prompts,
    replay,
    segment,
    segment_everything,
)
from .engine.device import select_device
from .engine.predictor import ImagePredictor
from .engine.prompts import Prompt
from .engine.sources import open_image
from .engine.tracker import Tracker
from .model import VARIANTS, Sam2Config, Sam2Model

try:
    __version__ = version("napari-sam2")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "__version__",
    "load_model",
    "open_image",
    "segment",
    "propagate",
    "segment_everything",
    "replay",
    "read_prompts",
    "SegmentationResult",
    "ImagePredictor",
    "select_device",
    "Prompt",
    "Tracker",
    "Sam2Model",
    "Sam2Config",
    "VARIANTS",
]
