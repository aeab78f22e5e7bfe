"""The from-scratch start of the demo model: prompt attention in the decoder begins local."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sam2.engine.prompts import Prompt, prompt_tensors
from napari_sam2.model import Memory, Sam2Model
from napari_sam2.model.config import DEMO_CONFIG
from napari_sam2.training.scratch_init import localise_memory_attention, localise_prompt_attention

CLICKS = [(40, 200), (120, 56), (200, 232), (136, 136), (24, 24), (232, 104)]  # (row, col), 256 x 256 input


def _contrast(model: Sam2Model, monkeypatch) -> float:
    """Attention on a click's token (first image->token attention of the decoder, mean over heads)
    from image tokens within 1.5 tokens of the click, over that from tokens 6 or more away;
    averaged over the click positions, all decoded at once on one random image."""
    seen: list[torch.Tensor] = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append((q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1))
        return sdpa(q, k, v, **kw)

    torch.manual_seed(1)
    feats = model.encode_image(torch.randn(1, 3, 256, 256))
    embed = model.embed_without_memory(feats)
    pairs = [prompt_tensors(Prompt([c], [1]), (256, 256), 256, torch.device("cpu")) for c in CLICKS]
    coords, labels = torch.cat([c for c, _ in pairs]), torch.cat([lb for _, lb in pairs])
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model.decode(embed, feats.high_res, coords, labels, None, True, repeat_image=True)
    monkeypatch.undo()
    # decoder order: self, token->image, image->token, ...; image->token has 256 queries, 8 keys
    image_to_token = next(w for w in seen if w.shape[-2:] == (256, 8)).detach()
    click_token = 6  # object-score, IoU, 4 mask tokens, then the click (then the padding point)
    weights = image_to_token[:, :, :, click_token].mean(1).reshape(len(CLICKS), 16, 16).numpy()
    rows, cols = np.mgrid[:16, :16]
    ratios = []
    for w, click in zip(weights, CLICKS):
        dist = np.hypot(rows - click[0] // 16, cols - click[1] // 16)
        ratios.append(w[dist <= 1.5].mean() / w[dist >= 6].mean())
    return float(np.mean(ratios))


def test_click_attention_starts_local(monkeypatch):
    """Averaged over four random starts (one start alone varies with its random image features)."""
    plain, local = [], []
    for seed in range(4):
        torch.manual_seed(seed)
        plain.append(_contrast(Sam2Model(DEMO_CONFIG).eval(), monkeypatch))
        torch.manual_seed(seed)
        model = Sam2Model(DEMO_CONFIG).eval()
        localise_prompt_attention(model)
        local.append(_contrast(model, monkeypatch))
    assert np.mean(plain) < 1.15, plain  # a random start has no notion of distance
    assert np.mean(local) > 1.4, local


def test_frequency_pairs_are_orthogonal_and_span_the_range():
    torch.manual_seed(0)
    model = Sam2Model(DEMO_CONFIG)
    localise_prompt_attention(model, r_min=0.5, r_max=4.0)
    freqs = model.sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix.T  # (F, 2)
    pairs = freqs.reshape(-1, 2, 2)
    radii = pairs.norm(dim=-1)
    assert torch.allclose(radii[:, 0], radii[:, 1])
    assert torch.allclose((pairs[:, 0] * pairs[:, 1]).sum(-1), torch.zeros(len(pairs)), atol=1e-6)
    assert radii[0, 0].item() == pytest.approx(0.5) and radii[-1, 0].item() == pytest.approx(4.0)
    assert torch.all(radii[1:, 0] > radii[:-1, 0])


def _changed_keys(init) -> set[str]:
    """Names of the state tensors that ``init(model)`` changes on a freshly built, seeded model."""
    torch.manual_seed(0)
    model = Sam2Model(DEMO_CONFIG)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    init(model)
    return {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}


def test_only_the_documented_tensors_change():
    changed = _changed_keys(localise_prompt_attention)
    assert "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix" in changed
    changed.discard("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")
    assert changed and all(
        k.startswith("sam_mask_decoder.transformer.")
        and ("cross_attn" in k or "final_attn" in k)
        and (".q_proj." in k or ".k_proj." in k)
        for k in changed
    ), sorted(changed)


@pytest.mark.parametrize("kwargs", [{"gain": 0.0}, {"noise": -1.0}, {"r_min": 2.0, "r_max": 1.0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="need gain > 0"):
        localise_prompt_attention(Sam2Model(DEMO_CONFIG), **kwargs)


def _memory_contrast(model: Sam2Model, monkeypatch) -> tuple[float, float]:
    """Attention of a frame token on the memory tokens of the previous frame within 1.5 tokens of
    it, over that on tokens 6 or more away (first memory-attention layer, four query positions),
    and the attention share of the object-pointer tokens."""
    seen: list[torch.Tensor] = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        if q.shape[-2] == 256 and k.shape[-2] > 256:  # cross-attention: 256 frame tokens
            seen.append((q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1))
        return sdpa(q, k, v, **kw)

    torch.manual_seed(1)
    feats = model.encode_image(torch.randn(2, 3, 256, 256))
    low_res = torch.full((1, 1, 64, 64), -10.0)
    low_res[..., 20:36, 20:36] = 10.0
    mem, pos = model.encode_memory(feats.select(0), low_res, torch.ones(1, 1), True)
    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model.condition_on_memory(
        feats.select(1),
        [Memory(mem, pos, 0), Memory(mem, pos, 1)],
        torch.randn(1, 2, 64),
        torch.tensor([1.0, 2.0]),
        4,
    )
    monkeypatch.undo()
    weights = seen[0][0, 0].detach()
    first = weights[:, :256].reshape(16, 16, 16, 16).numpy()  # query row, col, key row, col
    rows, cols = np.mgrid[:16, :16]
    ratios = []
    for r, c in [(3, 3), (8, 8), (12, 5), (2, 13)]:
        dist = np.hypot(rows - r, cols - c)
        ratios.append(first[r, c][dist <= 1.5].mean() / first[r, c][dist >= 6].mean())
    return float(np.mean(ratios)), float(weights[:, 512:].sum(-1).mean())


def test_memory_attention_starts_local(monkeypatch):
    plain, local, pointer_share = [], [], []
    for seed in range(3):
        torch.manual_seed(seed)
        plain.append(_memory_contrast(Sam2Model(DEMO_CONFIG).eval(), monkeypatch)[0])
        torch.manual_seed(seed)
        model = Sam2Model(DEMO_CONFIG).eval()
        localise_memory_attention(model)
        contrast, share = _memory_contrast(model, monkeypatch)
        local.append(contrast)
        pointer_share.append(share)
    assert np.mean(plain) < 1.2, plain  # a random start attends to every memory token alike
    assert np.mean(local) > 10, local
    assert max(pointer_share) < 0.05, pointer_share  # pointers (not rotated) get no spurious focus


def test_memory_init_changes_only_the_documented_tensors():
    changed = _changed_keys(localise_memory_attention)
    expected = {"maskmem_tpos_enc"} | {
        f"memory_attention.layers.{i}.cross_attn_image.{proj}.{part}"
        for i in range(DEMO_CONFIG.mem_attn_layers)
        for proj in ("q_proj", "k_proj")
        for part in ("weight", "bias")
    }
    assert changed - expected == set() and expected - changed == set(), sorted(changed ^ expected)


@pytest.mark.parametrize(
    "kwargs", [{"gain": 0.0}, {"frequencies": 0}, {"frequencies": 99}, {"slot_norm": 0.0}, {"mask_gain": 0.0}]
)
def test_memory_init_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="need gain > 0"):
        localise_memory_attention(Sam2Model(DEMO_CONFIG), **kwargs)


def test_memory_init_mask_gain_scales_only_the_mask_path():
    torch.manual_seed(0)
    model = Sam2Model(DEMO_CONFIG)
    last = model.memory_encoder.mask_downsampler.encoder[-1]
    weight, bias = last.weight.clone(), last.bias.clone()
    torch.manual_seed(1)
    plain = Sam2Model(DEMO_CONFIG)
    plain.load_state_dict(model.state_dict())
    torch.manual_seed(2)
    localise_memory_attention(plain)
    torch.manual_seed(2)
    localise_memory_attention(model, mask_gain=20.0)
    assert torch.allclose(last.weight, 20 * weight) and torch.allclose(last.bias, 20 * bias)
    differ = {k for k, v in model.state_dict().items() if not torch.equal(v, plain.state_dict()[k])}
    assert differ == {
        "memory_encoder.mask_downsampler.encoder.12.weight",
        "memory_encoder.mask_downsampler.encoder.12.bias",
    }
