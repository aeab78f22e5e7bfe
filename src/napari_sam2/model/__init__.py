"""Pure-PyTorch SAM2: configs, modules, checkpoints and the weights registry (torch only)."""

from .config import VARIANTS, HieraConfig, Sam2Config, get_config
from .sam2_model import FrameOutput, ImageFeatures, Memory, Sam2Model

__all__ = ["VARIANTS", "HieraConfig", "Sam2Config", "get_config", "Sam2Model", "ImageFeatures", "FrameOutput", "Memory"]
