"""Our model on its own: configs, state-dict layouts of the eight official variants, shapes."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from napari_sam2.model import VARIANTS, Memory, Sam2Config, Sam2Model, get_config
from napari_sam2.model.checkpoint import _layout
from napari_sam2.model.memory_attention import Rotation, rope_angles

KEYS = Path(__file__).parent / "data" / "keys"
SHORT = {"tiny": "t", "small": "s", "base_plus": "b+", "large": "l"}


def official_layout(variant: str) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of an official checkpoint (lists checked against real file headers)."""
    gen, size = variant.split("_hiera_")
    rows = (KEYS / f"{gen}_hiera_{SHORT[size]}.txt").read_text().splitlines()
    return [(name, tuple(ast.literal_eval(shape))) for name, shape in (r.split("\t") for r in rows)]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_state_dict_layout_equals_official(variant):
    ours = _layout(VARIANTS[variant])
    assert list(ours.items()) == official_layout(variant)


@pytest.mark.parametrize(
    ("variant", "params"),
    [
        ("sam2_hiera_tiny", 38_945_986),
        ("sam2.1_hiera_small", 46_060_354),
        ("sam2.1_hiera_large", 224_446_642),
    ],
)
def test_parameter_counts_match_published_sizes(variant, params):
    with torch.device("meta"):
        model = Sam2Model(VARIANTS[variant])
    assert sum(p.numel() for p in model.parameters()) == params


def test_config_rejects_bad_sizes_and_unknown_names():
    with pytest.raises(ValueError, match="multiple of 32"):
        Sam2Config(name="bad", image_size=1000)
    with pytest.raises(KeyError, match=r"sam2\.1_hiera_tiny"):
        get_config("sam2.1_hiera_tiniest")
    assert get_config("sam2.1_hiera_base_plus.pt") is VARIANTS["sam2.1_hiera_base_plus"]


def test_sam20_and_sam21_differ_only_in_the_documented_entries():
    a, b = _layout(VARIANTS["sam2_hiera_small"]), _layout(VARIANTS["sam2.1_hiera_small"])
    assert set(b) - set(a) == {"no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"}
    assert set(a) <= set(b)


@pytest.mark.parametrize("image_size", [160, 256])
def test_custom_size_shapes_through_every_step(image_size):
    torch.manual_seed(0)
    cfg = replace(VARIANTS["sam2.1_hiera_tiny"], name="tiny-custom", image_size=image_size)
    model = Sam2Model(cfg).eval()
    e, lr = image_size // 16, image_size // 4
    feats = model.encode_image(torch.randn(2, 3, image_size, image_size))
    assert feats.embed.shape == (2, 256, e, e) and feats.pos.shape == (2, 256, e, e)
    assert feats.high_res[0].shape == (2, 32, 4 * e, 4 * e) and feats.high_res[1].shape == (
        2,
        64,
        2 * e,
        2 * e,
    )

    one = feats.select(1)
    coords = torch.tensor([[[image_size / 3, image_size / 2]]])
    out = model.decode(
        model.embed_without_memory(one), one.high_res, coords, torch.tensor([[1]]), multimask=True
    )
    assert out.masks.shape == (1, 3, lr, lr) and out.iou.shape == (1, 3) and out.tokens.shape == (1, 3, 256)
    assert ((out.iou >= 0) & (out.iou <= 1)).all()

    frame = model.predict_frame(
        model.embed_without_memory(one), one.high_res, coords, torch.tensor([[1]]), multimask=True
    )
    mem, pos = model.encode_memory(one, frame.low_res, frame.object_score, from_clicks=True)
    assert mem.shape == (1, 64, e, e) and pos.shape == (1, 64, e, e)
    cond = model.condition_on_memory(
        one, [Memory(mem, pos, 0), Memory(mem, pos, 6)], frame.obj_ptr[:, None], torch.tensor([1.0]), 6
    )
    assert cond.shape == (1, 256, e, e) and torch.isfinite(cond).all()


def test_batched_decode_shares_one_image():
    torch.manual_seed(0)
    model = Sam2Model(replace(VARIANTS["sam2_hiera_tiny"], name="t128", image_size=128)).eval()
    feats = model.encode_image(torch.randn(1, 3, 128, 128))
    embed = model.embed_without_memory(feats)
    coords = torch.tensor([[[20.0, 30.0]], [[90.0, 70.0]]])
    labels = torch.ones(2, 1, dtype=torch.int32)
    both = model.decode(embed, feats.high_res, coords, labels, repeat_image=True)
    for i in range(2):
        single = model.decode(embed, feats.high_res, coords[i : i + 1], labels[i : i + 1])
        torch.testing.assert_close(both.masks[i : i + 1], single.masks, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("use_complex", [True, False])
def test_rope_rotation_is_relative(use_complex):
    """RoPE makes q.k depend only on the offset between positions, and preserves norms; the
    complex (CPU/CUDA) and real (MPS) paths agree."""
    rotate = Rotation(rope_angles(4, 4, 8))
    if not use_complex:
        rotate.complex = False
        rotate.cos, rotate.sin = rope_angles(4, 4, 8).cos(), rope_angles(4, 4, 8).sin()
    q = torch.randn(1, 1, 1, 8).expand(1, 1, 16, 8)
    rq = rotate(q)
    torch.testing.assert_close(rq, Rotation(rope_angles(4, 4, 8))(q))
    torch.testing.assert_close(rq.norm(dim=-1), q.norm(dim=-1))
    dots = rq[0, 0] @ rq[0, 0].T
    # tokens 0->1 and 5->6 are both one column apart on the same row
    torch.testing.assert_close(dots[0, 1], dots[5, 6])
    assert not torch.allclose(dots[0, 1], dots[0, 2])
