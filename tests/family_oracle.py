"""Run the authors' code of a SAM2-family model (EdgeTAM, EfficientTAM) as a test oracle, in its own process.

The authors' packages install under the import name ``sam2``, like Meta's reference that the other
parity tests import, so they never share a process with it: a test runs

    python tests/family_oracle.py ORACLE_DIR JOB.json

which puts ``ORACLE_DIR`` (a ``pip install --target`` folder) first on ``sys.path``, builds the
authors' model with seeded random weights, saves them as an official checkpoint
(``{"model": state_dict}``), runs the job and writes every output with ``torch.save``. The test
then loads the checkpoint into our model and compares in its own process.

Jobs (JSON): ``{"kind": "image" | "video", "config": "edgetam.yaml", "image_size": 512,
"seed": 0, "overrides": {...}, "checkpoint": PATH, "out": PATH, ...}``; see :func:`run_image`
and :func:`run_video` for the rest, and :func:`_perceiver_one_object_at_a_time`. A job with
``"efficienttam": {"embed_dim": 192, "num_heads": 3, "cross_attention": "RoPEAttention"}`` builds an
EfficientTAM instead: see :func:`_register_efficienttam`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _offline_timm(sam2) -> None:
    """The authors' RepViT trunk asks timm for ImageNet weights; build it without downloading."""
    try:
        import sam2.modeling.backbones.timm as timm_backbone
    except ImportError:  # families without a timm trunk
        return
    create = timm_backbone.create_model
    timm_backbone.create_model = lambda *a, **k: create(*a, **{**k, "pretrained": False})


def _perceiver_one_object_at_a_time(torch) -> None:
    """The authors' ``PerceiverResampler.forward_2d`` calls ``.view`` on an expanded tensor, which
    fails for more than one object in a batch ("view size is not compatible with input tensor's
    size and stride"), so their video predictor cannot track two objects. With
    ``"split_perceiver_batch": true`` the oracle runs that function once per object (the same
    arithmetic per object) so that the rest of their pipeline can be compared with ours."""
    from sam2.modeling.perceiver import PerceiverResampler

    one = PerceiverResampler.forward_2d

    def per_object(self, x):
        outs = [one(self, x[i : i + 1]) for i in range(x.shape[0])]
        return torch.cat([o[0] for o in outs]), torch.cat([o[1] for o in outs])

    PerceiverResampler.forward_2d = per_object


def _register_efficienttam(spec: dict) -> str:
    """The ``efficient-track-anything`` 1.0 wheel ships its model code but none of its YAML configs
    (``sam2/configs`` holds only ``__init__.py``), so the architecture is registered here with Hydra's
    config store under a name its own builders can compose. The values are those of the authors'
    ``efficienttam_{ti,s}[_1|_2|_512x512].yaml`` (yformer/EfficientTAM): a plain ViT trunk (patch 16,
    12 blocks, 14 x 14 windows except in blocks 2, 5, 8 and 11), a single-level neck with layer norms,
    no high-resolution features in the mask decoder, SAM 2.0 memory flags, and the memory
    cross-attention class that the variant's file names (``RoPEAttention`` for the plain files,
    ``EfficientRoPEAttention1`` for ``_1``, ``EfficientRoPEAttention2`` for ``_2``)."""
    from hydra.core.config_store import ConfigStore

    dim = spec["embed_dim"]
    mod = "sam2.modeling"

    def sine(n):
        return {
            "_target_": f"{mod}.position_encoding.PositionEmbeddingSine",
            "num_pos_feats": n,
            "normalize": True,
            "scale": None,
            "temperature": 10000,
        }

    def rope(target, **extra):
        return {
            "_target_": f"{mod}.sam.transformer.{target}",
            "rope_theta": 10000.0,
            "feat_sizes": [32, 32],
            "embedding_dim": 256,
            "num_heads": 1,
            "downsample_rate": 1,
            "dropout": 0.1,
            **extra,
        }

    model = {
        "_target_": f"{mod}.sam2_base.SAM2Base",
        "image_encoder": {
            "_target_": f"{mod}.backbones.image_encoder.ImageEncoder",
            "scalp": 0,
            "trunk": {
                "_target_": f"{mod}.backbones.vitdet.ViT",
                "patch_size": 16,
                "embed_dim": dim,
                "depth": 12,
                "num_heads": spec["num_heads"],
                "mlp_ratio": 4.0,
                "qkv_bias": True,
                "drop_path_rate": 0.0,
                "use_rel_pos": False,
                "window_size": 14,
                "window_block_indexes": [0, 1, 3, 4, 6, 7, 9, 10],
            },
            "neck": {
                "_target_": f"{mod}.backbones.image_encoder.ViTDetNeck",
                "position_encoding": sine(256),
                "d_model": 256,
                "backbone_channel_list": [dim],
                "neck_norm": "LN",
            },
        },
        "memory_attention": {
            "_target_": f"{mod}.memory_attention.MemoryAttention",
            "d_model": 256,
            "pos_enc_at_input": True,
            "num_layers": 4,
            "layer": {
                "_target_": f"{mod}.memory_attention.MemoryAttentionLayer",
                "activation": "relu",
                "dim_feedforward": 2048,
                "dropout": 0.1,
                "pos_enc_at_attn": False,
                "d_model": 256,
                "pos_enc_at_cross_attn_keys": True,
                "pos_enc_at_cross_attn_queries": False,
                "self_attention": rope("RoPEAttention"),
                "cross_attention": rope(spec["cross_attention"], rope_k_repeat=True, kv_in_dim=64),
            },
        },
        "memory_encoder": {
            "_target_": f"{mod}.memory_encoder.MemoryEncoder",
            "out_dim": 64,
            "position_encoding": sine(64),
            "mask_downsampler": {
                "_target_": f"{mod}.memory_encoder.MaskDownSampler",
                "kernel_size": 3,
                "stride": 2,
                "padding": 1,
            },
            "fuser": {
                "_target_": f"{mod}.memory_encoder.Fuser",
                "num_layers": 2,
                "layer": {
                    "_target_": f"{mod}.memory_encoder.CXBlock",
                    "dim": 256,
                    "kernel_size": 7,
                    "padding": 3,
                    "layer_scale_init_value": 1e-6,
                    "use_dwconv": True,
                },
            },
        },
        "num_maskmem": 7,
        "image_size": 1024,
        "sigmoid_scale_for_mem_enc": 20.0,
        "sigmoid_bias_for_mem_enc": -10.0,
        "use_mask_input_as_output_without_sam": True,
        "directly_add_no_mem_embed": True,
        "use_high_res_features_in_sam": False,
        "multimask_output_in_sam": True,
        "iou_prediction_use_sigmoid": True,
        "use_obj_ptrs_in_encoder": True,
        "add_tpos_enc_to_obj_ptrs": False,
        "only_obj_ptrs_in_the_past_for_eval": True,
        "pred_obj_scores": True,
        "pred_obj_scores_mlp": True,
        "fixed_no_obj_ptr": True,
        "multimask_output_for_tracking": True,
        "use_multimask_token_for_obj_ptr": True,
        "multimask_min_pt_num": 0,
        "multimask_max_pt_num": 1,
        "use_mlp_for_obj_ptr_proj": True,
        "compile_image_encoder": False,
    }
    name = f"napari_sam2_efficienttam_{dim}_{spec['cross_attention']}"
    ConfigStore.instance().store(name=name, node={"model": model})
    return name


def _randomise(model, torch) -> None:
    """Values that trained checkpoints have and the initialisation lacks (so nothing is trivially
    0 or 1): batch-norm statistics and affine terms, layer-scale gammas, a positive object score."""
    gen = torch.Generator().manual_seed(123)

    def rand(t, lo, hi):
        return torch.rand(t.shape, generator=gen) * (hi - lo) + lo

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(rand(m.weight, 0.5, 1.0))
                m.bias.copy_(rand(m.bias, -0.1, 0.1))
                m.running_mean.copy_(rand(m.running_mean, -0.1, 0.1))
                m.running_var.copy_(rand(m.running_var, 0.5, 1.5))
        model.sam_mask_decoder.pred_obj_score_head.layers[2].bias.fill_(2.0)
        trunk = model.image_encoder.trunk
        if getattr(trunk, "pos_embed", None) is not None and trunk.pos_embed.ndim == 3:  # ViT: zeros at init
            trunk.pos_embed.copy_(torch.randn(trunk.pos_embed.shape, generator=gen) * 0.02)
        for layer in model.memory_encoder.fuser.layers:
            layer.gamma.fill_(0.5)


def _build(job: dict):
    import sam2
    import torch
    from sam2.build_sam import build_sam2, build_sam2_video_predictor

    _offline_timm(sam2)
    config = _register_efficienttam(job["efficienttam"]) if "efficienttam" in job else job["config"]
    if job.get("split_perceiver_batch"):
        _perceiver_one_object_at_a_time(torch)
    extra = [f"++model.image_size={job['image_size']}"] + [
        f"++model.{k}={v}" for k, v in job.get("overrides", {}).items()
    ]
    torch.manual_seed(job.get("seed", 0))
    builder = build_sam2_video_predictor if job["kind"] == "video" else build_sam2
    model = builder(config, None, device="cpu", hydra_overrides_extra=extra)
    _randomise(model, torch)
    model.eval()
    torch.save({"model": model.state_dict()}, job["checkpoint"])
    return model, torch


def run_image(job: dict) -> dict:
    """Encoder levels and decoder outputs for ``job["prompts"]``: name -> [coords, labels,
    use_previous_mask, multimask] with coords as nested lists (B, N, 2) in model pixels (x, y)."""
    model, torch = _build(job)
    s = job["image_size"]
    torch.manual_seed(7)
    x = torch.randn(1, 3, s, s)
    out: dict = {"x": x}
    with torch.inference_mode():
        out["trunk"] = list(model.image_encoder.trunk(x))
        back = model.forward_image(x)
        out["fpn"] = list(back["backbone_fpn"])
        out["pos"] = list(back["vision_pos_enc"])
        embed = back["backbone_fpn"][-1] + model.no_mem_embed.view(1, -1, 1, 1)
        pe = model.sam_prompt_encoder
        # stride-4 and stride-8 levels, already projected by forward_image (none for EfficientTAM)
        hr = (
            [back["backbone_fpn"][0], back["backbone_fpn"][1]] if model.use_high_res_features_in_sam else None
        )

        def decode(coords, labels, mask, multi):
            sparse, dense = pe(points=(coords, labels), boxes=None, masks=mask)
            return model.sam_mask_decoder(
                image_embeddings=embed,
                image_pe=pe.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multi,
                repeat_image=False,
                high_res_features=hr,
            )

        out["decoded"] = {}
        for name, (coords, labels, use_mask, multi) in job["prompts"].items():
            coords = torch.tensor(coords, dtype=torch.float32)
            labels = torch.tensor(labels, dtype=torch.int32)
            mask = None
            if use_mask:
                first = decode(coords, labels, None, True)
                mask = first[0][:, first[1].argmax(-1)].clamp(-32, 32)
            masks, iou, tokens, score = decode(coords, labels, mask, multi)
            out["decoded"][name] = {
                "mask_in": mask,
                "masks": masks,
                "iou": iou,
                "tokens": tokens,
                "score": score,
            }
    return out


def run_video(job: dict) -> dict:
    """The authors' video predictor on the JPEG folder ``job["clip"]`` through ``job["steps"]``:
    ``["points", frame, obj_id, [[x, y], ...], [labels], clear]``, ``["box", frame, obj_id,
    [x0, y0, x1, y1]]`` and ``["propagate", start, reverse]``. Records each step's masks."""
    predictor, torch = _build(job)
    import numpy as np

    # SAM 2.0-era predictors (EfficientTAM's) have only ``add_new_points``: a box is its two corners
    # with labels 2 and 3, first, replacing the frame's earlier points (what ``box=`` does in the newer API)
    old_api = not hasattr(predictor, "add_new_points_or_box")
    add = predictor.add_new_points if old_api else predictor.add_new_points_or_box
    records = []
    with torch.inference_mode():
        state = predictor.init_state(job["clip"])
        for step in job["steps"]:
            if step[0] == "points":
                _, frame, obj, pts, labels, clear = step
                _, ids, masks = add(
                    state,
                    frame,
                    obj,
                    points=np.array(pts, np.float32),
                    labels=np.array(labels, np.int32),
                    clear_old_points=clear,
                )
                records.append({frame: (list(ids), masks.clone())})
            elif step[0] == "box":
                _, frame, obj, box = step
                if old_api:
                    corners = np.array(box, np.float32).reshape(2, 2)
                    _, ids, masks = add(state, frame, obj, points=corners, labels=np.array([2, 3], np.int32))
                else:
                    _, ids, masks = add(state, frame, obj, box=np.array(box, np.float32))
                records.append({frame: (list(ids), masks.clone())})
            else:
                _, start, reverse = step
                run = predictor.propagate_in_video(state, start_frame_idx=start, reverse=reverse)
                records.append({t: (list(ids), m.clone()) for t, ids, m in run})
    return {"images": state["images"], "records": records}


def main(oracle_dir: str, job_file: str) -> None:
    sys.path.insert(0, oracle_dir)
    job = json.loads(Path(job_file).read_text())
    out = run_image(job) if job["kind"] == "image" else run_video(job)
    import torch

    torch.save(out, job["out"])


if __name__ == "__main__":
    main(*sys.argv[1:3])
