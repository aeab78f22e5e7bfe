"""napari-sam2: Segment Anything 2 (SAM2) for napari, for large microscopy images and volumes.

Public API (more arrives with the image predictor, the CLI and the widget):

* :func:`load_model` -- an official model by name (downloaded once) or a checkpoint file;
* :func:`open_image` -- numpy, dask, zarr, OME-Zarr or TIFF, read lazily;
* :class:`ImagePredictor` -- planes of any size (tiled at native resolution) + prompts -> masks;
* :class:`Prompt` and :class:`Tracker` -- clicks/boxes/masks on frames, propagated by SAM2;
* :func:`select_device` -- the device choice used everywhere (CUDA, then MPS, then CPU).
"""

from importlib.metadata import PackageNotFoundError, version

from .engine.device import select_device
from .engine.models import load_model
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
    "ImagePredictor",
    "select_device",
    "Prompt",
    "Tracker",
    "Sam2Model",
    "Sam2Config",
    "VARIANTS",
]
