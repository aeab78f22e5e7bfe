"""Parity with Meta's reference (sam2==1.1.0) on the image path, identical random weights.

Logits within 1e-4; binary masks identical except where the reference's logit lies within that
tolerance of the threshold 0 (such a pixel may fall either side on another CPU); IoU and object
scores within 1e-5. See the tolerances below for the measurements behind them. Runs on
``NAPARI_SAM2_TEST_DEVICE`` (default CPU; see conftest.py), with the same tolerances there.
"""

from __future__ import annotations

import pytest
import torch

from conftest import TEST_DEVICE, require_reference
from helpers import close, same_masks
from napari_sam2.model import VARIANTS, Sam2Model
from reference import build_reference, hydra_config_name, ours_from

require_reference()
pytestmark = pytest.mark.reference

# The tolerances come from how far fp32 results move between CPU kernels, not from how close the
# two implementations happen to be on one machine. Measured on the three fast cases (Xeon,
# torch 2.15): ours and the reference agree bit for bit under ATEN_CPU_CAPABILITY=avx512 (native
# here), avx2 and default (scalar); the same model under avx2 or default instead of avx512 moves
# decoder logits (magnitude <= 0.55) by up to 5.1e-7 and IoU / object scores by up to 6e-8
# (summation order in matmuls, convolutions and softmax differs per kernel). Both tolerances sit
# more than a hundred times above that, for kernels not measured here (AMD CPUs, other BLAS
# builds) and the deeper 1024-pixel case, which were not measured. Masks: 1-2 pixels per case have a
# reference logit within LOGIT_ATOL of 0, so exact mask equality would hang on the CPU; those
# pixels alone may differ (same_masks).
LOGIT_ATOL, SCORE_ATOL = 1e-4, 1e-5
CASES = [
    pytest.param(("sam2.1_hiera_tiny", 1024), marks=pytest.mark.slow, id="sam2.1_tiny-1024"),
    pytest.param(("sam2.1_hiera_tiny", 256), id="sam2.1_tiny-256"),
    pytest.param(("sam2.1_hiera_base_plus", 256), id="sam2.1_base_plus-256"),
    pytest.param(("sam2_hiera_small", 160), id="sam2_small-160"),
]


@pytest.fixture(params=CASES, scope="module")
def pair(request, tmp_path_factory):
    """(reference, ours, input, reference features, our features); module scope groups tests by case."""
    variant, size = request.param
    ref = build_reference(variant, size, seed=size, device=TEST_DEVICE)
    ours = ours_from(ref, tmp_path_factory.mktemp("w") / "ckpt.pt", variant, size, device=TEST_DEVICE)
    torch.manual_seed(7)
    x = torch.randn(1, 3, size, size).to(TEST_DEVICE)  # drawn on the CPU: the same input on every device
    with torch.inference_mode():
        return ref, ours, x, ref.forward_image(x), ours.encode_image(x)


def test_trunk_neck_and_embeddings(pair):
    ref, ours, x, rb, of = pair
    for r, o in zip(ref.image_encoder.trunk(x), ours.image_encoder.trunk(x)):
        close(r, o, LOGIT_ATOL)
    close(rb["backbone_fpn"][0], of.high_res[0], LOGIT_ATOL)  # after conv_s0
    close(rb["backbone_fpn"][1], of.high_res[1], LOGIT_ATOL)  # after conv_s1
    close(rb["backbone_fpn"][2], of.embed, LOGIT_ATOL)
    close(rb["vision_pos_enc"][2], of.pos, LOGIT_ATOL)
    close(
        rb["backbone_fpn"][2] + ref.no_mem_embed.view(1, -1, 1, 1), ours.embed_without_memory(of), LOGIT_ATOL
    )
    assert of.embed.abs().mean() > 0.01  # the features are not trivially zero


def _prompts(size):
    s = float(size)
    click = (torch.tensor([[[0.3 * s, 0.4 * s]]]), torch.tensor([[1]], dtype=torch.int32))
    return {
        "one_click_multimask": (*click, False, True),
        "positive_and_negative": (
            torch.tensor([[[0.3 * s, 0.4 * s], [0.6 * s, 0.5 * s]]]),
            torch.tensor([[1, 0]], dtype=torch.int32),
            False,
            False,
        ),
        "box": (
            torch.tensor([[[0.1 * s, 0.2 * s], [0.6 * s, 0.7 * s]]]),
            torch.tensor([[2, 3]], dtype=torch.int32),
            False,
            False,
        ),
        "box_and_click": (
            torch.tensor([[[0.1 * s, 0.2 * s], [0.6 * s, 0.7 * s], [0.3 * s, 0.3 * s]]]),
            torch.tensor([[2, 3, 1]], dtype=torch.int32),
            False,
            False,
        ),
        "click_with_previous_logits": (*click, True, False),
    }


@pytest.mark.parametrize("prompt", list(_prompts(1)))
def test_decoder_outputs(pair, prompt):
    ref, ours, x, rb, of = pair
    coords, labels, use_mask, multimask = _prompts(x.shape[-1])[prompt]
    coords, labels = coords.to(TEST_DEVICE), labels.to(TEST_DEVICE)
    emb_r = rb["backbone_fpn"][2] + ref.no_mem_embed.view(1, -1, 1, 1)
    hr_r = [rb["backbone_fpn"][0], rb["backbone_fpn"][1]]
    pe = ref.sam_prompt_encoder

    def ref_decode(mask, multi):
        sparse, dense = pe(points=(coords, labels), boxes=None, masks=mask)
        return ref.sam_mask_decoder(
            image_embeddings=emb_r,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multi,
            repeat_image=False,
            high_res_features=hr_r,
        )

    mask = None
    if use_mask:  # the low-res logits of a previous prediction, as SAM's predictors pass them
        first = ref_decode(None, True)
        mask = first[0][:, first[1].argmax(-1)].clamp(-32, 32)
    r_masks, r_iou, r_tokens, r_obj = ref_decode(mask, multimask)
    o = ours.decode(ours.embed_without_memory(of), of.high_res, coords, labels, mask, multimask)
    close(r_masks, o.masks, LOGIT_ATOL)
    same_masks(r_masks, o.masks > 0)
    close(r_iou, o.iou, SCORE_ATOL)
    close(r_obj, o.object_score, SCORE_ATOL)
    close(r_tokens, o.tokens, LOGIT_ATOL)
    assert o.masks.shape[1] == (3 if multimask else 1)
    assert (r_masks > 0).any() and (r_masks < 0).any()  # a mask with both sides, so equality means something


@pytest.mark.slow
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_reference_state_dict_loads_strictly(variant):
    """All eight variants: same names and shapes as the reference; its weights load strictly."""
    from hydra import compose
    from hydra.utils import instantiate

    torch.manual_seed(0)
    cfg = compose(config_name=hydra_config_name(variant))
    ref_sd = instantiate(cfg.model, _recursive_=True).state_dict()
    ours = Sam2Model(VARIANTS[variant])
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == [
        (k, tuple(v.shape)) for k, v in ref_sd.items()
    ]
    ours.load_state_dict(ref_sd, strict=True)
    assert torch.equal(
        ours.sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix,
        ref_sd["sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"],
    )


@pytest.mark.slow
@pytest.mark.parametrize("pair", [CASES[0]], indirect=True)
def test_whole_image_path_equals_sam2_image_predictor(pair):
    """uint8 RGB image -> masks at image resolution, through our ImagePredictor (window 0..255,
    resize, normalise, encode, decode, upsample) and the reference's SAM2ImagePredictor."""
    import numpy as np
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from napari_sam2.engine.predictor import ImagePredictor
    from napari_sam2.engine.prompts import Prompt

    ref, ours, *_ = pair
    rng = np.random.default_rng(3)
    img = (rng.random((300, 400, 3)) * 255).astype(np.uint8)
    img[100:200, 150:260] = (230, 60, 40)
    ref_pred = SAM2ImagePredictor(ref)
    ref_pred.set_image(img)
    r_logits, r_iou, r_low = ref_pred.predict(
        point_coords=np.array([[200.0, 150.0]]), point_labels=np.array([1]), return_logits=True
    )
    r_masks = r_logits > 0

    pred = ImagePredictor(ours)
    pred.set_image(img, window=(0, 255))
    out = pred.predict(Prompt(points=[[150, 200]], labels=[1]), multimask=True)  # (row, col)
    assert out.masks.shape == r_masks.shape == (3, 300, 400)
    assert (out.low_res[(0, 0)].numpy() - r_low).__abs__().max() <= LOGIT_ATOL
    # bilinear upsampling is a convex combination: full-size logits move no more than low-res ones
    same_masks(r_logits, out.masks)
    np.testing.assert_allclose(out.scores, r_iou, atol=SCORE_ATOL)
    assert 0 < r_masks[0].sum() < r_masks[0].size
