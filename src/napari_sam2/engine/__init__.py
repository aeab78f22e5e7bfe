"""Engine: arrays and prompts in, masks out. Never imports napari, qtpy or magicgui."""

from .device import DeviceError, autocast, select_device
from .prompts import Prompt, PromptError, prompt_tensors, to_model_xy
from .models import load_model
from .tracker import FrameResult, Track, Tracker, TrackerError, select_memories

__all__ = [
    "DeviceError",
    "autocast",
    "select_device",
    "Prompt",
    "PromptError",
    "prompt_tensors",
    "to_model_xy",
    "FrameResult",
    "Track",
    "Tracker",
    "TrackerError",
    "select_memories",
    "load_model",
]
