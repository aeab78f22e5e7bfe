"""Small deterministic inputs and random-weight models for the tests (see the package docstring)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import tifffile
import torch

from napari_sam2.engine import Prompt
from napari_sam2.engine.automask import AutoMask
from napari_sam2.model import HieraConfig, Sam2Config, Sam2Model
from napari_sam2.model.checkpoint import save_checkpoint
from napari_sam2.model.config import DEMO_CONFIG, VARIANTS
from napari_sam2.model.weights import FAMILY_WEIGHTS

# ---------------------------------------------------------------------------- files and volumes

TINY = replace(DEMO_CONFIG, name="tiny-64", image_size=64)
"""The demo architecture at a 64-pixel input: what the file-level API and CLI tests load."""

CLICKS = {(1, 1): Prompt(points=[[30, 35], [50, 10]], labels=[1, 0]), (2, 2): Prompt(box=(5, 5, 15, 20))}
"""Prompts for :func:`make_volume`: {(object, plane): prompt}."""

AUTO = {"points_per_side": 6, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.5}
"""Generator options under which :func:`save_sharp`'s model finds objects in :func:`make_volume`."""


def make_volume(seed: int = 0, planes: int = 4) -> np.ndarray:
    """(planes, 60, 70) uint8: noise with a bright square that drifts, and a dim one."""
    rng = np.random.default_rng(seed)
    vol = rng.integers(0, 80, (planes, 60, 70)).astype(np.uint8)
    for z in range(planes):
        vol[z, 20 + z : 40 + z, 25:45] = 240
        vol[z, 4:16, 4:22] = 160
    return vol


def write_tiff(path: Path, vol: np.ndarray) -> Path:
    tifffile.imwrite(path, vol, photometric="minisblack", metadata={"axes": "TZYX"[-vol.ndim :]})
    return path


def save_tiny(folder: Path) -> Path:
    """A small random-weight SAM2 in the official checkpoint layout (plus its config)."""
    torch.manual_seed(0)
    return save_checkpoint(Sam2Model(TINY), folder / "tiny.pt")


def save_medsam2(folder: Path) -> Path:
    """Random SAM 2.1 tiny weights as ``MedSAM2_latest.pt`` in the official layout (``{"model": state}``,
    no config): the file name makes the loader pick the ``medsam2`` config (tiny at a 512 input)."""
    torch.manual_seed(0)
    path = folder / FAMILY_WEIGHTS["MedSAM2_latest"].filename
    torch.save({"model": Sam2Model(VARIANTS["sam2.1_hiera_tiny"]).state_dict()}, path)
    return path


def save_sharp(folder: Path) -> Path:
    """:func:`save_tiny` for the automatic generator: a random decoder's logits are near 0, so its
    filters would drop every mask; the mask outputs are scaled up, as tests/test_automask.py does."""
    torch.manual_seed(0)
    model = Sam2Model(TINY)
    with torch.no_grad():
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[2].weight.mul_(300.0)
    return save_checkpoint(model, folder / "sharp.pt")


class FakeLayer:
    """Just what the API reads from a napari layer."""

    def __init__(self, data, scale=(1, 1, 1), translate=(0, 0, 0), features=None, **extra):
        self.data, self.scale, self.translate = data, np.asarray(scale, float), np.asarray(translate, float)
        self.properties = features or {}
        self.refreshed = 0
        self.__dict__.update(extra)

    def refresh(self):
        self.refreshed += 1


# ---------------------------------------------------------------------- in-memory tracker models

H, W = 48, 56
"""Frame size of the tracker tests' clips (not square, so a swapped axis shows)."""

P64 = Sam2Config(
    name="p64",
    trunk=HieraConfig(
        embed_dim=16,
        num_heads=1,
        stages=(1, 1, 1, 1),
        global_att_blocks=(2,),
        window_spec=(4, 4, 4, 2),
        pos_embed_size=(4, 4),
    ),
    image_size=64,
    d_model=64,
    mem_dim=32,
    mem_attn_layers=1,
    mem_attn_ffn_dim=128,
    mem_fuser_layers=1,
    decoder_mlp_dim=128,
)
"""The smallest SAM2 that still has every part: the bookkeeping tests' model."""


def make_model(score_bias: float = 2.0, seed: int = 0, image_size: int = 64) -> Sam2Model:
    """A random-weight :data:`P64` whose object-score head says "present" (``score_bias`` > 0) or
    "absent" (< 0) for sure, instead of a coin flip."""
    torch.manual_seed(seed)
    model = Sam2Model(replace(P64, image_size=image_size)).eval()
    with torch.no_grad():
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(score_bias)
    return model


def square(r, c, half=6, shape=(H, W)) -> np.ndarray:
    """A boolean square of side ``2 * half`` centred at (r, c), clipped to ``shape``."""
    m = np.zeros(shape, bool)
    m[max(r - half, 0) : r + half, max(c - half, 0) : c + half] = True
    return m


def auto_mask(box, shape=(40, 40)) -> AutoMask:
    """An :class:`AutoMask` filling ``box`` (row0, col0, row1, col1) of a plane of ``shape``."""
    m = np.zeros(shape, bool)
    m[box[0] : box[2], box[1] : box[3]] = True
    return AutoMask(
        m[box[0] : box[2], box[1] : box[3]], box, 0.9, 0.95, (0.0, 0.0), (0, 0, shape[0], shape[1])
    )
