"""Engine: arrays and prompts in, masks out. Never imports napari or qtpy."""

from .automask import (
    AutoMask,
    AutoMaskCancelled,
    AutoMaskConfig,
    AutoMaskError,
    AutoReport,
    generate_masks,
    masks_to_labels,
    segment_everything,
)
from .cache import CacheKey, EmbeddingCache, weights_fingerprint
from .device import DeviceError, autocast, select_device
from .frames import FrameError, FrameSequence
from .intensity import (
    IntensityWindow,
    WindowError,
    apply_window,
    ct_window,
    resolve_window,
    robust_window,
    to_model_input,
)
from .labels import LabelError, LabelWriter, MaskPatch, PlaneEdit, create_labels, seed_objects
from .models import load_model
from .predictor import ImagePredictor, Prediction, PredictorError
from .prompts import Prompt, PromptError, prompt_tensors, to_model_xy
from .sources import ImageSource, SourceError, open_image
from .tiling import Tile, TileGrid, TilingError
from .timelapse import TimeReport, track_through_time
from .tracker import (
    Crop,
    FrameResult,
    FrameStats,
    RunReport,
    Track,
    Tracker,
    TrackerError,
    segment_bounds,
    select_memories,
)

__all__ = [
    "AutoMask",
    "AutoMaskCancelled",
    "AutoMaskConfig",
    "AutoMaskError",
    "AutoReport",
    "generate_masks",
    "masks_to_labels",
    "segment_everything",
    "CacheKey",
    "EmbeddingCache",
    "weights_fingerprint",
    "DeviceError",
    "autocast",
    "select_device",
    "FrameError",
    "FrameSequence",
    "LabelError",
    "LabelWriter",
    "MaskPatch",
    "PlaneEdit",
    "create_labels",
    "seed_objects",
    "IntensityWindow",
    "WindowError",
    "apply_window",
    "ct_window",
    "resolve_window",
    "robust_window",
    "to_model_input",
    "load_model",
    "ImagePredictor",
    "Prediction",
    "PredictorError",
    "Prompt",
    "PromptError",
    "prompt_tensors",
    "to_model_xy",
    "ImageSource",
    "SourceError",
    "open_image",
    "Tile",
    "TileGrid",
    "TilingError",
    "TimeReport",
    "track_through_time",
    "FrameResult",
    "FrameStats",
    "RunReport",
    "Track",
    "Tracker",
    "TrackerError",
    "Crop",
    "segment_bounds",
    "select_memories",
]
