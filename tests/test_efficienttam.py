"""EfficientTAM in our model package: variants, layout, checkpoints, the registry, the pooled memory
cross-attention. No oracle needed (random weights); parity with the authors' code is in
``test_parity_efficienttam.py``."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sam2.model import FAMILY_VARIANTS, Memory, Sam2Model, ViTConfig, get_config
from napari_sam2.model.checkpoint import CheckpointError, _layout, identify_variant, load_checkpoint
from napari_sam2.model.memory_attention import RoPEAttention
from napari_sam2.model.weights import ALIASES, FAMILY_WEIGHTS, family_of, get_weights_info

NAMES = [f"efficienttam_{t}{k}" for t in ("ti", "s") for k in ("", "_1", "_2", "_512x512")]


def test_variants_as_the_authors_publish_them():
    assert set(NAMES) <= set(FAMILY_VARIANTS)
    for name in NAMES:
        cfg = get_config(name)
        assert isinstance(cfg.trunk, ViTConfig) and not cfg.high_res_decoder and not cfg.sam21
        assert cfg.image_size == (512 if name.endswith("512x512") else 1024)
        assert cfg.memory_pooling == {"_1": "count", "_2": "key_offset"}.get(name[-2:])
    assert get_config("efficienttam_s").trunk == ViTConfig(embed_dim=384, num_heads=6)
    with pytest.raises(ValueError, match="memory_pooling"):
        replace(get_config("efficienttam_ti"), memory_pooling="mean")


def test_layout_matches_the_published_file_sizes():
    """Each published file is its tensors (float32) plus the same ~150 kB of torch.save archive:
    efficienttam_ti.pt has 71,616,316 bytes, efficienttam_s.pt 136,375,868 (Git LFS pointers)."""
    overheads = []
    for size in ("ti", "s"):
        layout = _layout(get_config(f"efficienttam_{size}"))
        assert len(layout) == 455  # as the authors' model (efficient-track-anything 1.0) has
        n = sum(int(np.prod(v)) for v in layout.values())
        overheads.append(FAMILY_WEIGHTS[f"efficienttam_{size}"].size_bytes - 4 * n)
        for kind in ("_1", "_2", "_512x512"):  # one layout per trunk
            assert _layout(get_config(f"efficienttam_{size}{kind}")) == layout
    assert all(140_000 < o < 160_000 for o in overheads), overheads
    layout = _layout(get_config("efficienttam_ti"))
    assert layout["image_encoder.trunk.pos_embed"] == (1, 197, 192)
    assert layout["image_encoder.neck.convs.0.conv_3x3.weight"] == (256, 256, 3, 3)
    assert not any(k.startswith("sam_mask_decoder.conv_s") for k in layout)
    assert "no_obj_embed_spatial" not in layout and "obj_ptr_tpos_proj.weight" not in layout


def test_unnamed_files_are_recognised_as_the_plain_variant(tmp_path):
    for size in ("ti", "s"):
        state = {k: torch.zeros(v) for k, v in _layout(get_config(f"efficienttam_{size}")).items()}
        assert identify_variant(state) == f"efficienttam_{size}"
    torch.save({"model": state}, tmp_path / "my_model.pt")
    assert load_checkpoint(tmp_path / "my_model.pt").config.name == "efficienttam_s"


def test_registry_names_the_variant_and_a_mismatched_file_is_named(tmp_path):
    state = {k: torch.zeros(v) for k, v in _layout(get_config("efficienttam_ti")).items()}
    torch.save({"model": state}, tmp_path / "efficienttam_ti_512x512.pt")
    model = load_checkpoint(tmp_path / "efficienttam_ti_512x512.pt")
    assert model.config.name == "efficienttam_ti_512x512" and model.config.image_size == 512
    torch.save({"model": state}, tmp_path / "efficienttam_s_2.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "efficienttam_s_2.pt")
    msg = str(err.value)
    assert "efficienttam_s_2.pt does not fit the model 'efficienttam_s_2'" in msg
    assert "entries of another shape" in msg and "looks like 'efficienttam_ti'" in msg


def test_registry_entries():
    for name in NAMES:
        info = FAMILY_WEIGHTS[name]
        assert info.config == name and get_weights_info(f"{name}.pt") is info
        assert info.url == f"https://huggingface.co/yunyangx/efficient-track-anything/resolve/main/{name}.pt"
        assert info.hf_url == info.url and len(info.sha256) == 64 and int(info.sha256, 16)
        assert family_of(name) == "efficienttam"
    assert len({FAMILY_WEIGHTS[n].sha256 for n in NAMES}) == 8
    assert get_weights_info("efficienttam_ti_512") is FAMILY_WEIGHTS[ALIASES["efficienttam_ti_512"]]
    assert get_weights_info("medsam2").name == "MedSAM2_latest" and family_of("medsam2") == "medsam2"
    assert (family_of("edgetam"), family_of("sam2.1_hiera_tiny")) == ("edgetam", "sam2")


# ---------------------------------------------------------------------------------------------- memory


@pytest.fixture(scope="module")
def ti_256():
    torch.manual_seed(0)
    return Sam2Model(replace(get_config("efficienttam_ti_1"), image_size=256)).eval()


def _memories(model, feats, n):
    low = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    mem, pos = model.encode_memory(feats, low, torch.ones(1, 1), from_clicks=True)
    return [Memory(mem, pos, slot) for slot in (0, 6, 5)[:n]]


@pytest.mark.parametrize("pooling", ["count", "key_offset"])
def test_memories_are_pooled_only_from_two_on(ti_256, pooling):
    """The authors attend to every token while the memory holds one frame, and to pooled tokens
    once it holds more."""
    pooled = (
        ti_256 if pooling == "count" else Sam2Model(replace(ti_256.config, memory_pooling=pooling)).eval()
    )
    pooled.load_state_dict(ti_256.state_dict())
    full = Sam2Model(replace(ti_256.config, memory_pooling=None)).eval()
    full.load_state_dict(ti_256.state_dict())
    with torch.inference_mode():
        feats = ti_256.encode_image(torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1)))
        ptrs, offsets = torch.randn(1, 2, 256), torch.tensor([1.0, 2.0])
        for n, same in ((1, True), (3, False)):
            mems = _memories(ti_256, feats, n)
            a = pooled.condition_on_memory(feats, mems, ptrs, offsets, 6)
            b = full.condition_on_memory(feats, mems, ptrs, offsets, 6)
            assert torch.equal(a, b) == same
            assert same or (a - b).abs().max() > 1e-3


def test_count_pooling_is_attention_to_each_pooled_token_four_times():
    """``"count"``: log 4 on a pooled key's logit weighs it as the four tokens it averages."""
    torch.manual_seed(3)
    attn = RoPEAttention(32, kv_dim=8, repeat_k=True, pooling="count").eval()
    grid, n_ptr = (4, 6), 3
    q, kv = torch.randn(2, 24, 32), torch.randn(2, 2 * 24 + n_ptr, 8)
    with torch.inference_mode():
        got = attn(q, kv, kv, grid, num_k_exclude=n_ptr)
        # by hand: rotate, average 2 x 2 blocks of each memory, repeat each average four times
        qh, k, v = attn.q_proj(q)[:, None], attn.k_proj(kv)[:, None], attn.v_proj(kv)[:, None]
        rot = attn._rotation(grid, 32, q.device)
        k_mem = rot(k[:, :, :48].unflatten(2, (2, 24)))

        def pool4(t):  # (B, 1, 2, 24, C) -> (B, 1, 2 * 6 * 4, C)
            maps = t.reshape(4, 4, 6, -1).permute(0, 3, 1, 2)
            pooled = F.avg_pool2d(maps, 2).flatten(2).transpose(1, 2)  # (4, 6, C)
            return pooled.repeat_interleave(4, dim=1).reshape(2, 1, -1, t.shape[-1])

        keys = torch.cat((pool4(k_mem), k[:, :, 48:]), dim=2)
        values = torch.cat((pool4(v[:, :, :48].unflatten(2, (2, 24))), v[:, :, 48:]), dim=2)
        want = attn.out_proj(F.scaled_dot_product_attention(rot(qh), keys, values)[:, 0])
    assert (got - want).abs().max() < 1e-5
    assert math.isclose(2 * math.log(2), math.log(4))


def test_image_features_have_no_high_res_levels(ti_256):
    with torch.inference_mode():
        feats = ti_256.encode_image(torch.randn(2, 3, 256, 256))
    assert feats.embed.shape == feats.pos.shape == (2, 256, 16, 16)
    assert feats.high_res[0].shape == (2, 0, 64, 64) and feats.high_res[1].shape == (2, 0, 32, 32)
    assert feats.select(1).embed.shape == (1, 256, 16, 16)


def test_disk_cache_round_trips_features_without_high_res_levels(ti_256, tmp_path):
    from napari_sam2.engine.cache import CacheKey, EmbeddingCache

    with torch.inference_mode():
        feats = ti_256.encode_image(torch.randn(1, 3, 256, 256))
    cache = EmbeddingCache(max_bytes=0, directory=tmp_path)  # disk only
    key = CacheKey("plane", (), (0, 0, 256, 256), "efficienttam_ti_1", (0.0, 1.0), 256)
    cache.put(key, feats)
    again = cache.get(key)
    assert cache.stats.disk_hits == 1 and torch.equal(again.embed, feats.embed)
    assert again.high_res[0].shape == (1, 0, 64, 64) and again.high_res[1].shape == (1, 0, 32, 32)
