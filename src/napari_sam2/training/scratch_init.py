"""A starting point for training a SAM2 mask decoder from scratch: prompt attention that is local.

Why this exists. A click selects one object only if the image tokens near the click attend to the
click's token more than far-away tokens do. In the two-way transformer that preference comes from
the product of two positional encodings (the grid's and the click's) through the query and key
projections. With the usual random initialisation that product carries no notion of distance, the
image tokens cannot tell which object was clicked, and training settles into a plateau that
predicts every object of the image for every click (measured on the demo data with 12 nuclei per
image: soft dice 0.85-0.89 over 800 steps, 0.77 after 3,000, held-out 1-click IoU 0.015).
Breaking it needs a gradient signal that a random start does not give.

What this does, before training starts:

* it replaces the prompt encoder's random Fourier frequencies (a buffer that checkpoints carry)
  by a spread of pairs: each pair is two orthogonal frequencies of the same magnitude, and the
  magnitudes grow geometrically from ``r_min`` to ``r_max`` (cycles per unit of the normalised
  [-1, 1] coordinate, halved), with directions turned by the golden angle;
* in every cross-attention of the mask decoder's transformer it sets the query and key
  projections of head ``h`` to read the sine and cosine of one frequency pair (``gain`` on
  those inputs, a little noise elsewhere), so the attention logit between an image token and a
  prompt token starts as ``gain**2`` times a sum of cosines of their distance: largest where they
  coincide. Heads get pairs from low to high frequency, so together they localise coarsely and
  finely.

:func:`localise_memory_attention` does the same for memory attention, where the tracker asks
"was the object here in the frames before?". That attention rotates queries and keys by their
grid positions (RoPE), so a query and a key that both carry the same constant vector score a sum
of cosines of their distance. It gives every spatial memory token that constant vector through
the memory's temporal slot embedding (which object pointers do not get) and every query through
the query projection's bias, on the channel pairs that rotate fastest. Without it, the demo
training learnt clicks but not tracking: unprompted frames came out as every nucleus of the
slice, because each frame token saw the same average of all memories.

Everything it changes is an ordinary parameter or buffer of the official layout, so a checkpoint
trained from this start loads unchanged into our model and into the reference. It is for models
trained from scratch only; official or fine-tuned weights must not be re-initialised.
"""

from __future__ import annotations

import math

import torch

from ..model.sam2_model import Sam2Model

__all__ = ["localise_prompt_attention", "localise_memory_attention"]

_GOLDEN_ANGLE = math.pi * (3.0 - math.sqrt(5.0))


def _frequency_pairs(num_feats: int, r_min: float, r_max: float) -> torch.Tensor:
    """(2, num_feats) frequencies: num_feats // 2 orthogonal pairs of growing magnitude."""
    pairs = num_feats // 2
    freqs = torch.zeros(2, num_feats)
    for p in range(pairs):
        radius = r_min * (r_max / r_min) ** (p / max(pairs - 1, 1))
        angle = p * _GOLDEN_ANGLE
        for j, a in enumerate((angle, angle + math.pi / 2)):
            freqs[0, 2 * p + j] = radius * math.cos(a)
            freqs[1, 2 * p + j] = radius * math.sin(a)
    return freqs


@torch.no_grad()
def localise_prompt_attention(
    model: Sam2Model,
    gain: float = 3.0,
    r_min: float = 0.25,
    r_max: float = 3.0,
    noise: float = 0.02,
) -> None:
    """Re-initialise ``model`` in place so that prompt attention in the decoder starts local.

    Args:
        model: a freshly built (untrained) :class:`Sam2Model`.
        gain: weight on each selected positional feature; the starting attention logit spans
            about ``+-2 * gain**2``.
        r_min, r_max: smallest and largest frequency magnitude of the positional encoding.
        noise: standard deviation of the random weights left on all other inputs.
    """
    if gain <= 0 or noise < 0 or not 0 < r_min <= r_max:
        raise ValueError(
            f"need gain > 0, noise >= 0 and 0 < r_min <= r_max, got {gain}, {noise}, {r_min}, {r_max}"
        )
    encoding = model.sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix  # (2, F)
    num_feats = encoding.shape[1]
    encoding.copy_(_frequency_pairs(num_feats, r_min, r_max).to(encoding))
    pairs = num_feats // 2

    transformer = model.sam_mask_decoder.transformer
    attentions = [transformer.final_attn_token_to_image]
    for block in transformer.layers:
        attentions += [block.cross_attn_token_to_image, block.cross_attn_image_to_token]
    for attn in attentions:
        inner, dim = attn.q_proj.weight.shape  # inputs are [sin (F) | cos (F)] positional features
        head_dim = inner // attn.num_heads
        weight = torch.zeros(inner, dim)
        for h in range(attn.num_heads):
            pair = round(h * (pairs - 1) / max(attn.num_heads - 1, 1))
            for i, feat in enumerate((2 * pair, 2 * pair + 1)[: head_dim // 2]):
                row = h * head_dim + 2 * i
                weight[row, feat] = gain  # sine of this frequency
                weight[row + 1, num_feats + feat] = gain  # its cosine
        for proj in (attn.q_proj, attn.k_proj):
            proj.weight.copy_(weight + noise * torch.randn_like(weight))
            proj.bias.zero_()


@torch.no_grad()
def localise_memory_attention(
    model: Sam2Model,
    gain: float = 2.5,
    frequencies: int = 4,
    slot_norm: float = 8.0,
    noise: float = 0.02,
    mask_gain: float = 1.0,
) -> None:
    """Re-initialise ``model`` in place so that memory attention starts local in space.

    Every memory-attention layer's cross-attention gets queries ``b`` (its bias; the weights are
    reset to small noise) and keys ``b`` on spatial memory tokens (the key weights map the
    memories' temporal slot embedding ``u``, set to a vector of norm ``slot_norm``, onto ``b``).
    ``b`` has magnitude ``gain`` on the ``frequencies`` fastest-rotating channel pairs of each
    axis and 0 elsewhere, so a frame token's logit on a memory token starts as
    ``gain**2 / sqrt(head_dim)`` times a sum of cosines of their row and column distances.

    Args:
        model: a freshly built (untrained) :class:`Sam2Model`.
        gain: magnitude of each selected channel pair of ``b``; the starting logit at zero
            distance is ``2 * frequencies * gain**2 / sqrt(head_dim)``.
        frequencies: channel pairs used per axis (RoPE frequencies 1, 0.56, 0.32, 0.18, ...
            radians per token).
        slot_norm: norm of the temporal slot embedding that carries the keys' constant part;
            large against the memory features' own projection onto it.
        noise: standard deviation of the random weights left on the query and key projections.
        mask_gain: factor on the memory encoder's mask path (the mask downsampler's last
            convolution). At a random start the mask adds only about a tenth to a memory that
            mostly encodes the image, and that share shrinks as the image features grow in
            training; a gain keeps "where the object was" the loudest part of the memory.
    """
    layers = list(model.memory_attention.layers)
    head_dim = layers[0].cross_attn_image.q_proj.weight.shape[0] // layers[0].cross_attn_image.num_heads
    pairs_per_axis = head_dim // 4
    if gain <= 0 or noise < 0 or slot_norm <= 0 or mask_gain <= 0 or not 1 <= frequencies <= pairs_per_axis:
        raise ValueError(
            f"need gain > 0, noise >= 0, slot_norm > 0, mask_gain > 0 and 1 <= frequencies <= "
            f"{pairs_per_axis}, got {gain}, {noise}, {slot_norm}, {mask_gain}, {frequencies}"
        )
    tpos = model.maskmem_tpos_enc  # (slots, 1, 1, mem_dim)
    mem_dim = tpos.shape[-1]
    direction = torch.randn(mem_dim)
    direction /= direction.norm()
    tpos.copy_(tpos + slot_norm * direction.to(tpos))
    for layer in layers:
        attn = layer.cross_attn_image
        heads = attn.num_heads
        b = torch.zeros(heads, head_dim // 2, 2)  # channel pairs: column pairs first, then row pairs
        for axis in range(2):
            # unit phase: every pair starts as (gain, 0), so q and k agree and their product is a cosine
            b[:, axis * pairs_per_axis : axis * pairs_per_axis + frequencies, 0] = gain
        b = b.reshape(-1)
        q_w, k_w = attn.q_proj.weight, attn.k_proj.weight
        q_w.copy_(noise * torch.randn_like(q_w))
        attn.q_proj.bias.copy_(b.to(q_w))
        k_w.copy_(noise * torch.randn_like(k_w) + torch.outer(b, direction).to(k_w) / slot_norm)
        attn.k_proj.bias.zero_()
    if mask_gain != 1.0:
        last = model.memory_encoder.mask_downsampler.encoder[-1]
        last.weight.mul_(mask_gain)
        last.bias.mul_(mask_gain)
