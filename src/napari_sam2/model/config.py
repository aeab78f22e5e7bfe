"""Typed, frozen configuration of a SAM2 model and the eight official variants.

A :class:`Sam2Config` fully describes the architecture: two configs that compare equal build
models with identical state-dict layouts. The official checkpoints differ only in the Hiera trunk
(:class:`HieraConfig`) and in the SAM 2.1 flags (``sam21=True``), so each variant below is a
trunk plus a generation.

Custom configs for tests or small models use :func:`dataclasses.replace` on a variant, for
example ``replace(VARIANTS["sam2.1_hiera_tiny"], name="tiny-256", image_size=256)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "HieraConfig",
    "RepViTConfig",
    "ViTConfig",
    "PerceiverConfig",
    "Sam2Config",
    "VARIANTS",
    "FAMILY_VARIANTS",
    "get_config",
]


@dataclass(frozen=True)
class HieraConfig:
    """Hiera image trunk.

    Attributes:
        embed_dim: channels of stage 1; each later stage multiplies it by ``dim_mul``.
        num_heads: attention heads of stage 1; each later stage multiplies it by ``head_mul``.
        stages: number of blocks per stage (four stages).
        global_att_blocks: indices of blocks that attend over the whole map (no windows).
        window_spec: window side per stage, in tokens.
        pos_embed_size: (h, w) of the learned background position embedding, resized
            bicubically to the token grid.
        q_pool: number of stage transitions that halve the resolution (max-pool of queries).
        mlp_ratio: hidden width of each block's MLP relative to its channels.
    """

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: tuple[int, ...] = (5, 7, 9)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    pos_embed_size: tuple[int, int] = (7, 7)
    q_pool: int = 3
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0

    @property
    def depth(self) -> int:
        return sum(self.stages)

    @property
    def stage_ends(self) -> tuple[int, ...]:
        """Index of the last block of each stage."""
        ends, total = [], 0
        for n in self.stages:
            total += n
            ends.append(total - 1)
        return tuple(ends)

    @property
    def channels(self) -> tuple[int, ...]:
        """Output channels of each stage, highest resolution first."""
        return tuple(int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages)))


@dataclass(frozen=True)
class RepViTConfig:
    """RepViT image trunk (a mobile CNN), as used by EdgeTAM in place of Hiera.

    A stem of two stride-2 3x3 convolutions, then four stages; every stage but the first starts
    by halving the resolution. Blocks mix tokens with a depthwise 3x3 + 1x1 + identity branch
    and channels with a 1x1 inverted bottleneck; every other block has squeeze-excitation.

    Attributes:
        widths: channels of each stage, highest resolution first.
        depths: blocks per stage (not counting the downsampling block that opens stages 2-4).
        mlp_ratio: hidden width of the channel mixer relative to its channels.
        se_ratio: squeeze-excitation width relative to the channels (rounded to a multiple of 8).
    """

    widths: tuple[int, ...] = (48, 96, 192, 384)
    depths: tuple[int, ...] = (2, 2, 14, 2)
    mlp_ratio: int = 2
    se_ratio: float = 0.25

    @property
    def channels(self) -> tuple[int, ...]:
        """Output channels of each stage, highest resolution first."""
        return tuple(self.widths)


@dataclass(frozen=True)
class ViTConfig:
    """A plain (non-hierarchical) ViT trunk, as used by EfficientTAM in place of Hiera.

    Square patches become tokens of one width, which every block keeps; most blocks attend within
    square windows (the token map is zero-padded to a whole number of windows), the others over the
    whole map. A learned position embedding for a ``pos_embed_grid`` x ``pos_embed_grid`` map (plus
    an unused class-token slot, from ImageNet pre-training) is resized bicubically to the token map.

    Attributes:
        embed_dim: token width. depth: blocks. num_heads: attention heads per block.
        patch_size: side of a patch in pixels (the trunk's stride).
        window_size: side of the attention windows, in tokens.
        global_blocks: indices of the blocks that attend over the whole map.
        mlp_ratio: hidden width of each block's MLP relative to ``embed_dim``.
        pos_embed_grid: side of the stored position-embedding grid (224 / 16 = 14).
    """

    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    patch_size: int = 16
    window_size: int = 14
    global_blocks: tuple[int, ...] = (2, 5, 8, 11)
    mlp_ratio: float = 4.0
    pos_embed_grid: int = 14

    @property
    def channels(self) -> tuple[int, ...]:
        """Output channels: one level, at stride ``patch_size``."""
        return (self.embed_dim,)


@dataclass(frozen=True)
class PerceiverConfig:
    """EdgeTAM's spatial perceiver: compresses each frame's memory to a fixed set of latents.

    Attributes:
        num_latents: global latents, each attending to the whole memory map (no position).
        num_latents_2d: local latents on a square grid; each attends to its own window of the
            map and keeps the window's place (a 2D sine encoding of the latent grid).
        depth: attention layers (cross-attention to the map, feed-forward, then self-attention
            and feed-forward among the latents).
        ff_mult: feed-forward hidden width relative to the memory channels.
    """

    num_latents: int = 256
    num_latents_2d: int = 256
    depth: int = 2
    ff_mult: int = 4

    @property
    def grid(self) -> int:
        """Side of the grid of local latents (16 for 256)."""
        side = round(self.num_latents_2d**0.5)
        if side * side != self.num_latents_2d:
            raise ValueError(f"num_latents_2d must be a square, got {self.num_latents_2d}")
        return side


@dataclass(frozen=True)
class Sam2Config:
    """A whole SAM2 model: trunk, neck, prompt encoder, mask decoder and the video memory.

    Attributes:
        name: variant name, used in messages and in the weights registry.
        trunk: the image trunk: Hiera (SAM2), RepViT (EdgeTAM) or a plain ViT (EfficientTAM).
        image_size: side of the square model input in pixels; a multiple of 32.
        sam21: SAM 2.1 flags (temporal encoding of object pointers, projected to ``mem_dim``;
            a learned "no object" embedding added to the memory of frames without the object).
        d_model: channels of the FPN neck, prompt encoder, mask decoder and memory attention.
        mem_dim: channels of the memory features.
        num_maskmem: number of memory slots (1 conditioning slot + 6 previous frames).
        max_obj_ptrs: most object pointers the memory attention sees.
        dynamic_multimask: when one mask is asked for, fall back to the best of the three
            multimask outputs if the single mask is unstable.
        binarize_prompted_masks: binarise the mask of a clicked frame before encoding its memory.
        perceiver: EdgeTAM's spatial perceiver, which turns each memory into latents; None for
            SAM2 (memories stay feature maps).
        high_res_decoder: the mask decoder adds the trunk's stride-4 and stride-8 maps while
            upscaling (SAM2, EdgeTAM). EfficientTAM's single-level ViT has none: False.
        memory_pooling: EfficientTAM's efficient memory cross-attention. None: every memory token
            is a key (SAM2). Otherwise, once the memory holds more than one frame, the keys and
            values of each memory map are averaged over 2 x 2 blocks of tokens (a quarter of the
            tokens; object pointers stay as they are), and each pooled key stands for its four
            tokens in one of two ways: ``"count"`` adds log 4 to its attention logits, which equals
            attending to the four tokens when they share a key; ``"key_offset"`` adds log 4 to
            every channel of the pooled key instead (what the authors' ``EfficientRoPEAttention2``
            does).
    """

    name: str
    trunk: HieraConfig | RepViTConfig | ViTConfig = field(default_factory=HieraConfig)
    image_size: int = 1024
    sam21: bool = True
    d_model: int = 256
    mem_dim: int = 64
    num_maskmem: int = 7
    max_obj_ptrs: int = 16
    # prompt encoder and mask decoder
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_heads: int = 8
    decoder_mlp_dim: int = 2048
    num_multimask_outputs: int = 3
    dynamic_multimask: bool = True
    stability_delta: float = 0.05
    stability_thresh: float = 0.98
    # memory attention and memory encoder
    mem_attn_layers: int = 4
    mem_attn_ffn_dim: int = 2048
    mem_fuser_layers: int = 2
    # memory encoding of masks
    mask_sigmoid_scale: float = 20.0
    mask_sigmoid_bias: float = -10.0
    binarize_prompted_masks: bool = True
    perceiver: PerceiverConfig | None = None
    high_res_decoder: bool = True
    memory_pooling: str | None = None

    def __post_init__(self) -> None:
        if self.memory_pooling not in (None, "count", "key_offset"):
            raise ValueError(
                f"memory_pooling must be None, 'count' or 'key_offset', got {self.memory_pooling!r}"
            )
        if isinstance(self.trunk, ViTConfig) and self.trunk.patch_size != self.backbone_stride:
            raise ValueError(
                f"a ViT trunk needs patch_size {self.backbone_stride}, got {self.trunk.patch_size}"
            )
        if self.image_size % 32 != 0 or self.image_size <= 0:
            raise ValueError(f"image_size must be a positive multiple of 32, got {self.image_size}")
        if self.d_model % self.mem_dim != 0:
            raise ValueError(f"d_model ({self.d_model}) must be a multiple of mem_dim ({self.mem_dim})")
        if self.perceiver is not None and (self.image_size // 16) % self.perceiver.grid:
            side = 16 * self.perceiver.grid
            raise ValueError(
                f"{self.name}: image_size must be a multiple of {side} (the perceiver cuts each memory map "
                f"into {self.perceiver.grid} x {self.perceiver.grid} windows), got {self.image_size}"
            )

    @property
    def backbone_stride(self) -> int:
        return 16

    @property
    def embed_size(self) -> int:
        """Side of the image embedding grid (64 for a 1024 input)."""
        return self.image_size // self.backbone_stride

    @property
    def low_res_size(self) -> int:
        """Side of the decoder's mask logits (256 for a 1024 input)."""
        return self.image_size // 4


_TRUNKS = {
    "tiny": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 7, 2), global_att_blocks=(5, 7, 9)),
    "small": HieraConfig(embed_dim=96, num_heads=1, stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13)),
    "base_plus": HieraConfig(
        embed_dim=112,
        num_heads=2,
        stages=(2, 3, 16, 3),
        global_att_blocks=(12, 16, 20),
        pos_embed_size=(14, 14),
    ),
    "large": HieraConfig(
        embed_dim=144,
        num_heads=2,
        stages=(2, 6, 36, 4),
        global_att_blocks=(23, 33, 43),
        window_spec=(8, 4, 16, 8),
    ),
}

VARIANTS: dict[str, Sam2Config] = {
    f"{gen}_hiera_{size}": Sam2Config(name=f"{gen}_hiera_{size}", trunk=trunk, sam21=(gen == "sam2.1"))
    for gen in ("sam2", "sam2.1")
    for size, trunk in _TRUNKS.items()
}
"""The eight official variants, by the names of Meta's checkpoint files (without ``.pt``)."""


FAMILY_VARIANTS: dict[str, Sam2Config] = {
    "edgetam": Sam2Config(
        name="edgetam",
        trunk=RepViTConfig(),
        sam21=False,
        mem_attn_layers=2,
        perceiver=PerceiverConfig(),
    ),
    "medsam2": Sam2Config(name="medsam2", trunk=_TRUNKS["tiny"], image_size=512),
}

_EFFICIENTTAM_TRUNKS = {
    "ti": ViTConfig(embed_dim=192, num_heads=3),
    "s": ViTConfig(embed_dim=384, num_heads=6),
}
_EFFICIENTTAM_KINDS = {
    "": (1024, None),
    "_1": (1024, "count"),
    "_2": (1024, "key_offset"),
    "_512x512": (512, None),
}

FAMILY_VARIANTS.update(
    {
        f"efficienttam_{size}{kind}": Sam2Config(
            name=f"efficienttam_{size}{kind}",
            trunk=trunk,
            image_size=image_size,
            sam21=False,
            high_res_decoder=False,
            memory_pooling=pooling,
        )
        for size, trunk in _EFFICIENTTAM_TRUNKS.items()
        for kind, (image_size, pooling) in _EFFICIENTTAM_KINDS.items()
    }
)
"""Other published models of the SAM2 family, by the names of their checkpoint files.

``edgetam``: Meta's EdgeTAM (Zhou et al., CVPR 2025; facebookresearch/EdgeTAM, Apache-2.0): a
RepViT-M1 trunk (timm's ``repvit_m1.dist_in1k``), the spatial perceiver (256 global + 16 x 16
local latents per memory), 2 memory-attention layers, and SAM 2.0's flags otherwise (no
temporal encoding of object pointers, no "no object" memory embedding). Values from the
authors' ``sam2/configs/edgetam.yaml`` (package ``edgetam-dimos`` 1.0.1).

``medsam2``: MedSAM2 (Ma et al. 2025, bowang-lab/MedSAM2, Apache-2.0): SAM 2.1 tiny fine-tuned on
3D medical images and videos at a 512 input (the authors' ``sam2.1_hiera_t512.yaml``). Its files
have the layout of ``sam2.1_hiera_tiny``; the input size is what sets it apart, so it is chosen
by the file name (:data:`napari_sam2.model.weights.FAMILY_WEIGHTS`) when such a file is loaded.

``efficienttam_{ti,s}[_1|_2|_512x512]``: EfficientTAM (Xiong et al. 2024, yformer/EfficientTAM,
Apache-2.0): a plain ViT-Tiny (192 wide, 3 heads) or ViT-Small (384, 6 heads) trunk of 12 blocks
with one output level, no high-resolution features in the mask decoder, and SAM 2.0's memory
flags. The authors publish eight files that differ only in how they are run: ``_1`` and ``_2``
use the efficient memory cross-attention (``memory_pooling`` "count" and "key_offset"), the plain
files and ``_512x512`` (a 512 input) attend to every memory token. Values from the authors'
``efficienttam_*.yaml``. Files of one size share one layout, so the registry's file name chooses
the variant (as for MedSAM2); an unnamed file loads as the plain variant."""


def get_config(name: str) -> Sam2Config:
    """Return the official variant called ``name`` (``"sam2.1_hiera_tiny"``, ``"edgetam"``, ...).

    Raises:
        KeyError: for an unknown name; the message lists the known ones.
    """
    key = name.removesuffix(".pt")
    known = {**VARIANTS, **FAMILY_VARIANTS}
    if key not in known:
        raise KeyError(f"unknown SAM2 variant {name!r}; known variants: {', '.join(known)}")
    return known[key]


DEMO_CONFIG = Sam2Config(
    name="demo",
    trunk=HieraConfig(
        embed_dim=24,
        num_heads=1,
        stages=(1, 2, 3, 1),
        global_att_blocks=(5,),
        window_spec=(8, 4, 8, 4),
        pos_embed_size=(8, 8),
    ),
    image_size=256,
    d_model=64,
    mem_dim=32,
    mem_attn_layers=2,
    mem_attn_ffn_dim=256,
    mem_fuser_layers=1,
)
"""The small demo model shipped with the package (``load_model("demo")``), trained from scratch on
synthetic nuclei, cells and moving blobs (see ``napari_sam2/data/demo_sam2.json`` for the recipe).
A 256-pixel input, a 7-block Hiera of width 24 and a 64-channel neck, memory and decoder; the mask
decoder keeps SAM2's fixed 8 heads and 2048-wide MLP so Meta's code can build the same network."""
