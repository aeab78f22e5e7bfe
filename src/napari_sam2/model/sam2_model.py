"""``Sam2Model``: the SAM2 network as a set of small, stateless steps.

The steps, and who calls them:

* :meth:`Sam2Model.encode_image` once per image or frame (the expensive part);
* :meth:`Sam2Model.decode` for interactive prompts on a single image;
* :meth:`Sam2Model.predict_frame` / :meth:`Sam2Model.predict_from_mask` for one frame of a video
  (object-presence gating, best-mask choice, object pointer);
* :meth:`Sam2Model.encode_memory` to turn a frame's result into a memory;
* :meth:`Sam2Model.condition_on_memory` to condition a new frame on selected memories.

Which memories to use for a frame is the tracker's decision (``napari_sam2.engine``).
All coordinates here are model-input pixels as (x, y); tensors are NCHW unless stated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from torch import nn

from ._layers import MLP, resize_bilinear
from .config import Sam2Config
from .image_encoder import ImageEncoder
from .mask_decoder import DecoderOutput, MaskDecoder
from .memory_attention import MemoryAttention
from .memory_encoder import MemoryEncoder
from .perceiver import SpatialPerceiver
from .position_encoding import sine_encoding_1d
from .prompt_encoder import PAD, PromptEncoder

NO_OBJECT_LOGIT = -1024.0
"""Mask logit written everywhere on a frame where the object is predicted absent."""

MASK_PROMPT_SCALE, MASK_PROMPT_BIAS = 20.0, -10.0
"""A binary mask prompt m becomes logits ``20 * m - 10``."""


@dataclass
class ImageFeatures:
    """Encoder output for a batch of images.

    Attributes:
        embed: stride-16 features (B, C, h, w), not conditioned on any memory.
        pos: their sine position encoding (B, C, h, w).
        high_res: stride-4 (B, C/8, 4h, 4w) and stride-8 (B, C/4, 2h, 2w) features, already
            projected for the mask decoder; with no channels (B, 0, ., .) for a model whose
            decoder uses none (EfficientTAM).
    """

    embed: torch.Tensor
    pos: torch.Tensor
    high_res: tuple[torch.Tensor, torch.Tensor]

    def select(self, index: int) -> ImageFeatures:
        """Features of one image of the batch, keeping the batch axis."""
        s = slice(index, index + 1)
        return ImageFeatures(self.embed[s], self.pos[s], (self.high_res[0][s], self.high_res[1][s]))


@dataclass
class FrameOutput:
    """Result for one frame of a video, per object (batch B).

    Attributes:
        low_res: chosen mask logits (B, 1, 4h, 4w); all ``NO_OBJECT_LOGIT`` where absent.
        iou: predicted IoU of the chosen mask (B, 1).
        obj_ptr: object pointer (B, C).
        object_score: presence logit (B, 1).
    """

    low_res: torch.Tensor
    iou: torch.Tensor
    obj_ptr: torch.Tensor
    object_score: torch.Tensor


@dataclass
class Memory:
    """One frame's memory, as used by :meth:`Sam2Model.condition_on_memory`.

    Attributes:
        features: (B, mem_dim, h, w), any float dtype (stored as bfloat16 by the tracker); for a
            model with a spatial perceiver (EdgeTAM) latent tokens (B, L, mem_dim) instead.
        pos: (B or 1, mem_dim, h, w) spatial position encoding, or (B or 1, L, mem_dim).
        slot: temporal slot, 0 for a conditioning (prompted) frame; for other frames
            ``num_maskmem - d`` where d >= 1 is the distance in frames (6 = previous frame).
    """

    features: torch.Tensor
    pos: torch.Tensor
    slot: int


def _trunc_normal(*shape: int) -> nn.Parameter:
    p = nn.Parameter(torch.zeros(*shape))
    nn.init.trunc_normal_(p, std=0.02)
    return p


class Sam2Model(nn.Module):
    """SAM2 / SAM2.1, EdgeTAM (``config.perceiver`` set) and EfficientTAM (a ViT trunk). State-dict
    names and shapes equal the official checkpoints."""

    def __init__(self, config: Sam2Config) -> None:
        super().__init__()
        self.config = cfg = config
        dim, mem = cfg.d_model, cfg.mem_dim
        self.maskmem_tpos_enc = _trunc_normal(cfg.num_maskmem, 1, 1, mem)
        self.no_mem_embed = _trunc_normal(1, 1, dim)
        self.no_mem_pos_enc = _trunc_normal(1, 1, dim)  # in checkpoints, unused by SAM2's configs
        self.no_obj_ptr = _trunc_normal(1, dim)
        if cfg.sam21:
            self.no_obj_embed_spatial = _trunc_normal(1, mem)
        self.image_encoder = ImageEncoder(cfg)
        self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        self.memory_attention = MemoryAttention(
            dim, mem, cfg.mem_attn_layers, cfg.mem_attn_ffn_dim, pooling=cfg.memory_pooling
        )
        self.memory_encoder = MemoryEncoder(dim, mem, cfg.mem_fuser_layers)
        if cfg.perceiver is not None:
            self.spatial_perceiver = SpatialPerceiver(mem, cfg.perceiver)
        self.sam_prompt_encoder = PromptEncoder(dim, cfg.embed_size, cfg.image_size, cfg.mask_in_chans)
        self.sam_mask_decoder = MaskDecoder(
            dim,
            cfg.decoder_depth,
            cfg.decoder_heads,
            cfg.decoder_mlp_dim,
            cfg.num_multimask_outputs,
            cfg.dynamic_multimask,
            cfg.stability_delta,
            cfg.stability_thresh,
            high_res=cfg.high_res_decoder,
        )
        self.obj_ptr_proj = MLP(dim, dim, dim, num_layers=3)
        self.obj_ptr_tpos_proj = nn.Linear(dim, mem) if cfg.sam21 else None

    @property
    def device(self) -> torch.device:
        return self.no_obj_ptr.device

    @property
    def dtype(self) -> torch.dtype:
        return self.no_obj_ptr.dtype

    def with_image_size(self, image_size: int) -> Sam2Model:
        """The same network at another input size, sharing this model's parameters (no copy).

        SAM2's weights do not depend on the input size (position embeddings are resized to the
        token grid), so e.g. a 1024 model can run on 256 x 256 crops at native resolution.
        """
        if image_size == self.config.image_size:
            return self
        other = Sam2Model(replace(self.config, image_size=image_size))
        other.load_state_dict(self.state_dict(), assign=True)
        return other.to(self.device).train(self.training)

    # ------------------------------------------------------------------ images
    def encode_image(self, images: torch.Tensor) -> ImageFeatures:
        """Normalised images (B, 3, S, S), S = ``config.image_size`` -> :class:`ImageFeatures`."""
        s = self.config.image_size
        if images.ndim != 4 or images.shape[1] != 3 or tuple(images.shape[2:]) != (s, s):
            raise ValueError(f"expected images of shape (B, 3, {s}, {s}), got {tuple(images.shape)}")
        feats, pos = self.image_encoder(images)
        dec = self.sam_mask_decoder
        if not self.config.high_res_decoder:  # EfficientTAM: one level; no channels at strides 4 and 8
            b, _, h, w = feats[-1].shape
            empty = feats[-1].new_zeros(b, 0, 4 * h, 4 * w), feats[-1].new_zeros(b, 0, 2 * h, 2 * w)
            return ImageFeatures(feats[-1], pos[-1], empty)
        return ImageFeatures(feats[2], pos[2], (dec.conv_s0(feats[0]), dec.conv_s1(feats[1])))

    def embed_without_memory(self, feats: ImageFeatures) -> torch.Tensor:
        """The embedding used for a single image or a first prompted frame (B, C, h, w)."""
        return feats.embed + self.no_mem_embed.view(1, -1, 1, 1)

    def decode(
        self,
        embed: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        coords: torch.Tensor,
        labels: torch.Tensor,
        mask_logits: torch.Tensor | None = None,
        multimask: bool = True,
        repeat_image: bool = False,
    ) -> DecoderOutput:
        """Run prompt encoder and mask decoder.

        Args:
            embed: (1 or B, C, h, w), usually from :meth:`embed_without_memory`.
            high_res: as in :class:`ImageFeatures`.
            coords: (B, N, 2) points as (x, y) in model-input pixels; boxes are two points with
                labels 2 (top-left) and 3 (bottom-right), placed first.
            labels: (B, N) ints: 1 positive, 0 negative, 2/3 box corners, -1 padding.
            mask_logits: optional (B, 1, 4h, 4w) mask prompt (e.g. previous low-res logits).
            multimask: three masks per prompt set instead of one.
            repeat_image: share one image embedding between B prompt sets.
        """
        pe = self.sam_prompt_encoder
        if mask_logits is not None and mask_logits.shape[-1] != pe.mask_input_size:
            mask_logits = resize_bilinear(mask_logits.float(), pe.mask_input_size, antialias=True)
        sparse, dense = pe(coords, labels, mask_logits)
        return self.sam_mask_decoder(embed, pe.dense_pe(), sparse, dense, high_res, multimask, repeat_image)

    # ------------------------------------------------------------------ video
    def predict_frame(
        self,
        embed: torch.Tensor,
        high_res: tuple[torch.Tensor, torch.Tensor],
        coords: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mask_logits: torch.Tensor | None = None,
        multimask: bool = False,
    ) -> FrameOutput:
        """Decode one frame for B objects and apply the video rules.

        ``embed`` is memory-conditioned (or :meth:`embed_without_memory` on a first prompted
        frame). Masks of objects whose presence logit is <= 0 are replaced by
        ``NO_OBJECT_LOGIT`` and their pointer by the learned "no object" pointer. With
        ``multimask`` the mask with the best predicted IoU is chosen.
        """
        b = embed.shape[0]
        if coords is None:
            coords = embed.new_zeros(b, 1, 2)
            labels = torch.full((b, 1), PAD, dtype=torch.int32, device=embed.device)
        return self.frame_output(
            self.decode(embed, high_res, coords, labels, mask_logits, multimask), multimask
        )

    def frame_output(self, out: DecoderOutput, multimask: bool) -> FrameOutput:
        """The video rules applied to a decoder output (B objects): masks of objects whose presence
        logit is <= 0 become ``NO_OBJECT_LOGIT``, with ``multimask`` the mask with the best predicted
        IoU is chosen, and the object pointer is projected from the chosen mask token (the learned
        "no object" pointer where absent). Training calls it on the decoder output it keeps for its
        losses; :meth:`predict_frame` is ``decode`` followed by this."""
        b = out.masks.shape[0]
        present = out.object_score > 0  # (B, 1)
        masks = torch.where(present[:, :, None, None], out.masks, NO_OBJECT_LOGIT).float()
        token = out.tokens[:, 0]
        if multimask:
            rows = torch.arange(b, device=masks.device)
            best = out.iou.argmax(dim=-1)
            low_res, iou = masks[rows, best].unsqueeze(1), out.iou[rows, best].unsqueeze(1)
            if out.tokens.shape[1] > 1:
                token = out.tokens[rows, best]
        else:
            low_res, iou = masks, out.iou
        obj_ptr = self._gate_pointer(self.obj_ptr_proj(token), present.to(token.dtype))
        return FrameOutput(low_res, iou, obj_ptr, out.object_score)

    def predict_from_mask(self, feats: ImageFeatures, mask: torch.Tensor) -> FrameOutput:
        """Use a binary mask prompt (B, 1, S, S) as the frame's output.

        The mask becomes logits +-10; the pointer comes from decoding the (downsampled) mask on
        the raw features; presence is "any pixel set".
        """
        m = mask.float()
        high = m * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS
        low_res = resize_bilinear(high, self.config.low_res_size, antialias=True)
        inner = self.predict_frame(feats.embed, feats.high_res, mask_logits=self.mask_downsample(m))
        present = (m.flatten(1) > 0).any(dim=1, keepdim=True).float()  # (B, 1)
        return FrameOutput(
            low_res=low_res,
            iou=m.new_ones(m.shape[0], 1),
            obj_ptr=self._gate_pointer(inner.obj_ptr, present),
            object_score=present * MASK_PROMPT_SCALE + MASK_PROMPT_BIAS,
        )

    def _gate_pointer(self, ptr: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return present * ptr + (1 - present) * self.no_obj_ptr

    def encode_memory(
        self,
        feats: ImageFeatures,
        low_res: torch.Tensor,
        object_score: torch.Tensor,
        from_clicks: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory of a frame from its chosen mask logits (B, 1, 4h, 4w).

        Masks from clicks are binarised (``config.binarize_prompted_masks``), tracked masks go
        through a sigmoid. Returns (features (B, mem_dim, h, w), position encoding); with a
        spatial perceiver (EdgeTAM) latents (B, L, mem_dim) and their positions (B, L, mem_dim).
        """
        cfg = self.config
        high = resize_bilinear(low_res.float(), cfg.image_size)
        prob = (high > 0).float() if (from_clicks and cfg.binarize_prompted_masks) else torch.sigmoid(high)
        mem, pos = self.memory_encoder(feats.embed, prob * cfg.mask_sigmoid_scale + cfg.mask_sigmoid_bias)
        if cfg.sam21:
            absent = 1 - (object_score > 0).to(mem.dtype)  # (B, 1)
            mem = mem + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        if cfg.perceiver is not None:
            mem, pos = self.spatial_perceiver(mem, pos)
        return mem, pos

    def condition_on_memory(
        self,
        feats: ImageFeatures,
        memories: Sequence[Memory],
        pointers: torch.Tensor | None = None,
        pointer_offsets: torch.Tensor | None = None,
        max_pointer_offset: int = 1,
    ) -> torch.Tensor:
        """Condition a frame's features on memories and object pointers -> (B, C, h, w).

        Args:
            feats: the frame's features.
            memories: spatial memories with their temporal slots.
            pointers: (B, P, C) object pointers of other frames, or None.
            pointer_offsets: (P,) frame distances of the pointers (>= 0).
            max_pointer_offset: distance that maps to 1 in the pointers' temporal encoding. The
                official model divides by ``min(num_frames, 16) - 1``, which is 0 for a one-frame
                video; we clamp it to at least 1 (the official code yields NaN there).
        """
        cfg = self.config
        dtype = feats.embed.dtype
        tokens, pos = [], []
        for m in memories:
            f, p = m.features.to(dtype), m.pos.to(dtype)
            if f.ndim == 4:  # a memory map
                f, p = f.flatten(2).transpose(1, 2), p.flatten(2).transpose(1, 2)  # (B, hw, mem)
            tokens.append(f)  # (B, tokens, mem)
            p = p + self.maskmem_tpos_enc[cfg.num_maskmem - m.slot - 1].view(1, 1, -1)
            pos.append(p.expand_as(f))
        num_ptr_tokens = 0
        if pointers is not None and pointers.shape[1] > 0:
            b, p_count, c = pointers.shape
            split = c // cfg.mem_dim
            if self.obj_ptr_tpos_proj is not None:
                offsets = pointer_offsets.to(device=pointers.device, dtype=torch.float32)
                tpe = self.obj_ptr_tpos_proj(
                    sine_encoding_1d(offsets / max(max_pointer_offset, 1), c).to(dtype)
                )
            else:
                tpe = pointers.new_zeros(p_count, cfg.mem_dim)
            # each C-wide pointer becomes C / mem_dim consecutive tokens sharing one position
            tokens.append(pointers.to(dtype).reshape(b, p_count * split, cfg.mem_dim))
            pos.append(tpe.repeat_interleave(split, dim=0).unsqueeze(0).expand(b, -1, -1))
            num_ptr_tokens = p_count * split
        memory, memory_pos = torch.cat(tokens, dim=1), torch.cat(pos, dim=1)
        k_layout = None
        if cfg.perceiver is not None:  # global latents (no rotation), then a grid of local latents
            k_layout = (cfg.perceiver.num_latents, (cfg.perceiver.grid, cfg.perceiver.grid))
        return self.memory_attention(feats.embed, feats.pos, memory, memory_pos, num_ptr_tokens, k_layout)
