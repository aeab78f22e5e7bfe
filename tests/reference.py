"""Meta's reference implementation (``sam2==1.1.0``, installed for tests only) as an oracle.

Both implementations get identical random weights: the reference model is built with a seed,
saved in the official checkpoint format, and that same file is loaded into ours.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from napari_sam2.model import Sam2Model, get_config
from napari_sam2.model.checkpoint import load_checkpoint

SHORT = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


def hydra_config_name(variant: str) -> str:
    gen, size = variant.split("_hiera_")
    return f"configs/{gen}/{gen}_hiera_{SHORT[size]}.yaml"


def build_reference(
    variant: str, image_size: int = 1024, seed: int = 0, video: bool = False, device="cpu", **overrides
):
    """The reference model (or video predictor) on ``device`` in eval mode with seeded random weights
    (drawn on the CPU, so they do not depend on the device).

    The object-score head's bias is raised to +2 so that "object present" is not a coin flip
    with random weights (see SAM2_SPEC section 8.1).
    """
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    extra = [f"++model.image_size={image_size}"] + [f"++model.{k}={v}" for k, v in overrides.items()]
    torch.manual_seed(seed)
    builder = build_sam2_video_predictor if video else build_sam2
    ref = builder(hydra_config_name(variant), None, device=str(device), hydra_overrides_extra=extra)
    with torch.no_grad():
        ref.sam_mask_decoder.pred_obj_score_head.layers[2].bias.fill_(2.0)
        # trained checkpoints have non-trivial values here; zeros (the init) would hide bugs
        ref.image_encoder.trunk.pos_embed.normal_(std=0.02)
        ref.image_encoder.trunk.pos_embed_window.normal_(std=0.02)
        for layer in ref.memory_encoder.fuser.layers:
            layer.gamma.fill_(0.5)
    return ref.eval()


def save_official(ref, path: Path) -> Path:
    torch.save({"model": ref.state_dict()}, path)
    return path


def ours_from(ref, path: Path, variant: str, image_size: int = 1024, device="cpu") -> Sam2Model:
    save_official(ref, path)
    cfg = replace(get_config(variant), image_size=image_size)
    return load_checkpoint(path, config=cfg).eval().to(device)
