"""Pure-PyTorch SAM2: configs, modules, checkpoints and the weights registry (torch only)."""

from .config import (
    FAMILY_VARIANTS,
    VARIANTS,
    HieraConfig,
    PerceiverConfig,
    RepViTConfig,
    Sam2Config,
    ViTConfig,
    get_config,
)
from .sam2_model import FrameOutput, ImageFeatures, Memory, Sam2Model

__all__ = [
    "VARIANTS",
    "FAMILY_VARIANTS",
    "HieraConfig",
    "RepViTConfig",
    "ViTConfig",
    "PerceiverConfig",
    "Sam2Config",
    "get_config",
    "Sam2Model",
    "ImageFeatures",
    "FrameOutput",
    "Memory",
]
