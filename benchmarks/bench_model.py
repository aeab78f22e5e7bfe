"""Speed and memory of our SAM2 against Meta's reference (``sam2==1.1.0``) on identical weights.

For each variant the reference is built with seeded random weights, saved in the official
checkpoint format and the same file is loaded into ours (as in ``tests/reference.py``). Three
stages are timed side by side in one process, on the same input:

1. ``encode``: image encoding of one (1, 3, S, S) normalised image.
2. ``click``: prompt encoder + mask decoder for one positive click, multimask, on the
   encoded image (the embedding with ``no_mem_embed`` added and the projected high-res
   features, as in the reference's image predictor).
3. ``step``: one memory-conditioned video frame: memory attention over 7 spatial memories
   (1 conditioning + 6 previous frames) and 16 object pointers, decoding (multimask, best
   mask), and encoding the frame's new memory. The memories and pointers come from each
   model's own click result on the same frame.

Calls alternate between the two implementations (ours, ref, ref, ours, ...), each stage is
warmed up first, and the reported ratio is the median of the per-repeat ratios ours/ref
(< 1: ours is faster). On a shared machine absolute times drift; only the ratios mean
something. Peak RSS comes from one child process per implementation (same script, hidden
``--only`` flag) that loads the same checkpoint and runs every stage once.

Usage::

    .venv/bin/python benchmarks/bench_model.py                 # tiny and large at 1024
    .venv/bin/python benchmarks/bench_model.py --quick         # smoke run: tiny at 256, 1 repeat
    .venv/bin/python benchmarks/bench_model.py --variants sam2.1_hiera_small --json out.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _common import run_result_child  # noqa: E402

from napari_sam2.model import Memory, Sam2Model, get_config  # noqa: E402
from napari_sam2.model.checkpoint import load_checkpoint  # noqa: E402
from reference import build_reference, hydra_config_name, save_official  # noqa: E402

DEFAULT_VARIANTS = "sam2.1_hiera_tiny,sam2.1_hiera_large"
QUICK_VARIANTS = "sam2.1_hiera_tiny"
STAGES = ("encode", "click", "step")
SEED = 0
CHEAP_STAGE_S, CHEAP_STAGE_REPEATS = 1.0, 15
"""Stages whose warm-up took less than this many seconds get at least this many repeats."""
PARITY_TOL = 1e-4
"""Largest max-abs difference between the two implementations' outputs that is not flagged."""


# ---------------------------------------------------------------------------- timing helpers
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def max_abs_diff(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    return max((a.float() - b.float()).abs().max().item() for a, b in pairs)


# ---------------------------------------------------------------------------- models and inputs
def load_ours(path: Path, variant: str, image_size: int, device: torch.device) -> Sam2Model:
    cfg = replace(get_config(variant), image_size=image_size)
    return load_checkpoint(path, config=cfg).eval().to(device)


def load_ref(path: Path, variant: str, image_size: int, device: torch.device):
    from sam2.build_sam import build_sam2

    extra = [f"++model.image_size={image_size}"]
    return (
        build_sam2(hydra_config_name(variant), str(path), device="cpu", hydra_overrides_extra=extra)
        .eval()
        .to(device)
    )


def make_inputs(image_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(SEED)
    return {
        "image": torch.randn(1, 3, image_size, image_size, generator=gen).to(device),  # (1, 3, S, S)
        # one click (1, 1, 2) as (x, y) in model-input pixels
        "coords": torch.tensor([[[0.4 * image_size, 0.55 * image_size]]], device=device),
        "labels": torch.ones(1, 1, dtype=torch.int32, device=device),
    }


# ---------------------------------------------------------------------------- the three stages
class OursStages:
    """The stages for our model, through its public stateless API (as the tracker uses it)."""

    def __init__(self, model: Sam2Model, inputs: dict[str, torch.Tensor]) -> None:
        self.model, self.inputs = model, inputs
        cfg = model.config
        self.num_prev = cfg.num_maskmem - 1  # previous-frame memories besides the conditioning one
        self.num_ptrs = cfg.max_obj_ptrs  # 1 conditioning pointer + (max - 1) previous frames
        self.feats = self.embed = self.memory = self.memory_pos = self.pointer = None

    def encode(self):
        self.feats = self.model.encode_image(self.inputs["image"])
        self.embed = self.model.embed_without_memory(self.feats)
        return self.feats

    def click(self):
        return self.model.decode(
            self.embed, self.feats.high_res, self.inputs["coords"], self.inputs["labels"]
        )

    def prepare_memories(self):
        """A click result on this frame becomes the memory and pointer reused for every slot."""
        m = self.model
        first = m.predict_frame(
            self.embed, self.feats.high_res, self.inputs["coords"], self.inputs["labels"], multimask=True
        )
        self.memory, self.memory_pos = m.encode_memory(
            self.feats, first.low_res, first.object_score, from_clicks=False
        )
        self.pointer = first.obj_ptr

    def step(self):
        m = self.model
        memories = [Memory(self.memory, self.memory_pos, 0)]
        memories += [Memory(self.memory, self.memory_pos, slot) for slot in range(1, self.num_prev + 1)]
        # pointer order as SAM2 selects them: the conditioning frame first, then distances 1, 2, ...
        ptrs = torch.stack([self.pointer] * self.num_ptrs, dim=1)  # (1, P, C)
        offsets = torch.tensor([self.num_ptrs, *range(1, self.num_ptrs)], dtype=torch.float32)
        embed = m.condition_on_memory(
            self.feats, memories, ptrs, offsets, max_pointer_offset=self.num_ptrs - 1
        )
        out = m.predict_frame(embed, self.feats.high_res, multimask=True)
        mem, _ = m.encode_memory(self.feats, out.low_res, out.object_score, from_clicks=False)
        return out, mem


class RefStages:
    """The same stages for the reference, through the calls its predictors make."""

    def __init__(self, model, inputs: dict[str, torch.Tensor]) -> None:
        self.model, self.inputs = model, inputs
        self.num_ptrs = model.max_obj_ptrs_in_encoder
        # frame index and length such that 6 previous frames and 15 previous pointers exist
        self.frame_idx, self.num_frames = self.num_ptrs, 2 * self.num_ptrs
        self.backbone = self.vision = self.embed = self.high_res = self.output_dict = None

    def encode(self):
        m = self.model
        self.backbone = m.forward_image(self.inputs["image"])
        _, feats, pos, sizes = m._prepare_backbone_features(self.backbone)
        self.vision = (feats, pos, sizes)
        b, c = feats[-1].shape[1:]
        h, w = sizes[-1]
        # as SAM2ImagePredictor.set_image: (HW, B, C) + no_mem_embed -> (B, C, H, W)
        self.embed = (feats[-1] + m.no_mem_embed).permute(1, 2, 0).view(b, c, h, w)
        self.high_res = [
            x.permute(1, 2, 0).view(x.size(1), x.size(2), *s)
            for x, s in zip(feats[:-1], sizes[:-1], strict=True)
        ]
        return self.backbone

    def click(self):
        m = self.model
        sparse, dense = m.sam_prompt_encoder(
            points=(self.inputs["coords"], self.inputs["labels"]), boxes=None, masks=None
        )
        return m.sam_mask_decoder(
            image_embeddings=self.embed,
            image_pe=m.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            repeat_image=False,
            high_res_features=self.high_res,
        )

    def prepare_memories(self):
        m = self.model
        feats, _, sizes = self.vision
        points = {"point_coords": self.inputs["coords"], "point_labels": self.inputs["labels"]}
        *_, high_best, obj_ptr, score = m._forward_sam_heads(
            self.embed, point_inputs=points, high_res_features=self.high_res, multimask_output=True
        )
        mem, mem_pos = m._encode_new_memory(feats, sizes, high_best, score, is_mask_from_pts=False)
        entry = {
            "maskmem_features": mem,
            "maskmem_pos_enc": mem_pos,
            "obj_ptr": obj_ptr,
            "object_score_logits": score,
        }
        self.output_dict = {
            "cond_frame_outputs": {0: entry},
            "non_cond_frame_outputs": dict.fromkeys(range(1, self.frame_idx), entry),
        }

    def step(self):
        feats, pos, sizes = self.vision
        return self.model.track_step(
            frame_idx=self.frame_idx,
            is_init_cond_frame=False,
            current_vision_feats=feats,
            current_vision_pos_embeds=pos,
            feat_sizes=sizes,
            point_inputs=None,
            mask_inputs=None,
            output_dict=self.output_dict,
            num_frames=self.num_frames,
            run_mem_encoder=True,
        )


def stage_diffs(stage: str, ours_out, ref_out) -> float:
    """Max abs difference of the stage's outputs (ours vs reference)."""
    if stage == "encode":
        fpn = ref_out["backbone_fpn"]
        return max_abs_diff(
            [
                (ours_out.embed, ref_out["vision_features"]),
                (ours_out.high_res[0], fpn[0]),
                (ours_out.high_res[1], fpn[1]),
            ]
        )
    if stage == "click":
        masks, iou, _, score = ref_out
        return max_abs_diff([(ours_out.masks, masks), (ours_out.iou, iou), (ours_out.object_score, score)])
    out, mem = ours_out
    return max_abs_diff(
        [
            (out.low_res, ref_out["pred_masks"]),
            (out.obj_ptr, ref_out["obj_ptr"]),
            (mem, ref_out["maskmem_features"]),
        ]
    )


# ---------------------------------------------------------------------------- side-by-side timing
def compare_stage(stage: str, ours: OursStages, ref: RefStages, repeats: int, device: torch.device) -> dict:
    run_ours, run_ref = getattr(ours, stage), getattr(ref, stage)
    warm_ours, out_ours = timed(run_ours, device)  # warm-up, outputs kept for the parity check
    warm_ref, out_ref = timed(run_ref, device)
    diff = stage_diffs(stage, out_ours, out_ref)
    del out_ours, out_ref
    if min(warm_ours, warm_ref) < CHEAP_STAGE_S:  # cheap: more repeats cost little, cut the noise
        repeats = max(repeats, CHEAP_STAGE_REPEATS)
    t_ours, t_ref, ratios = [], [], []
    for i in range(repeats):
        gc.collect()
        if i % 2 == 0:  # ours, ref, ref, ours, ...: neither side always runs first
            a, _ = timed(run_ours, device)
            b, _ = timed(run_ref, device)
        else:
            b, _ = timed(run_ref, device)
            a, _ = timed(run_ours, device)
        t_ours.append(a)
        t_ref.append(b)
        ratios.append(a / b)
    return {
        "stage": stage,
        "ours_s": statistics.median(t_ours),
        "ref_s": statistics.median(t_ref),
        "ratio": statistics.median(ratios),
        "max_abs_diff": diff,
        "ratios": ratios,
        "ours_all_s": t_ours,
        "ref_all_s": t_ref,
    }


def bench_variant(variant: str, args, device: torch.device, ckpt: Path) -> list[dict]:
    t0 = time.perf_counter()
    ref_model = build_reference(variant, image_size=args.image_size, seed=SEED)
    save_official(ref_model, ckpt)
    ref_model = ref_model.to(device)
    ours_model = load_ours(ckpt, variant, args.image_size, device)
    print(f"[{variant}] built both models in {time.perf_counter() - t0:.1f} s", flush=True)
    inputs = make_inputs(args.image_size, device)
    ours, ref = OursStages(ours_model, inputs), RefStages(ref_model, inputs)
    rows = []
    with torch.inference_mode():
        for stage in STAGES:
            if stage == "step":
                ours.prepare_memories()
                ref.prepare_memories()
            row = compare_stage(stage, ours, ref, args.repeats, device)
            row["variant"] = variant
            print(
                f"[{variant}] {stage:6s} ours {row['ours_s']:.4f} s  ref {row['ref_s']:.4f} s  "
                f"ratio {row['ratio']:.3f}  max|diff| {row['max_abs_diff']:.2e}",
                flush=True,
            )
            if row["max_abs_diff"] > PARITY_TOL:
                print(
                    f"WARNING: {stage} outputs differ by {row['max_abs_diff']:.2e} > {PARITY_TOL:.0e}",
                    flush=True,
                )
            rows.append(row)
    return rows


# ---------------------------------------------------------------------------- peak memory (child)
def _proc_status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM), Linux only."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def ru_maxrss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def child_main(args, device: torch.device) -> None:
    """Load one implementation from the checkpoint, run every stage once, print memory as JSON."""
    ckpt, variant = Path(args.checkpoint), args.variants
    model = (load_ours if args.only == "ours" else load_ref)(ckpt, variant, args.image_size, device)
    inputs = make_inputs(args.image_size, device)
    stages = (OursStages if args.only == "ours" else RefStages)(model, inputs)
    gc.collect()
    after_build = _proc_status_kib("VmRSS")
    reset = _reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode():
        stages.encode()
        stages.click()
        stages.prepare_memories()
        stages.step()
    synchronize(device)
    hwm = _proc_status_kib("VmHWM") if reset else None
    result = {
        "impl": args.only,
        "variant": variant,
        "peak_rss_mib": ru_maxrss_mib(),
        "rss_after_build_mib": None if after_build is None else after_build / 1024,
        "peak_rss_stages_mib": None if hwm is None else hwm / 1024,
        "cuda_peak_alloc_mib": torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else None,
    }
    print("RESULT " + json.dumps(result), flush=True)


def measure_memory(variant: str, impl: str, args, ckpt: Path) -> dict:
    cmd = [
        sys.executable, str(Path(__file__).resolve()), "--only", impl, "--checkpoint", str(ckpt),
        "--variants", variant, "--image-size", str(args.image_size), "--device", args.device,
        "--threads", str(args.threads),
    ]  # fmt: skip
    return run_result_child(cmd, f"memory child for {impl} {variant}")


def machine_info(args, device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "image_size": args.image_size,
        "repeats": args.repeats,
    }
    try:
        from importlib.metadata import version

        info["sam2"] = version("sam2")
    except Exception:  # the reference is optional metadata here
        info["sam2"] = "unknown"
    with contextlib.suppress(OSError):
        info["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def print_tables(rows: list[dict], memory: list[dict]) -> None:
    print(
        "\n| stage | variant | ours median (s) | ref median (s) | ratio ours/ref | ratio range | max abs diff |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['stage']} | {r['variant']} | {r['ours_s']:.4f} | {r['ref_s']:.4f} | "
            f"{r['ratio']:.3f} | {min(r['ratios']):.2f}-{max(r['ratios']):.2f} | {r['max_abs_diff']:.1e} |"
        )
    if memory:
        print("\n| variant | impl | peak RSS (MiB) | RSS after load (MiB) | peak RSS during stages (MiB) |")
        print("|---|---|---:|---:|---:|")
        for m in memory:
            fmt = lambda v: "n/a" if v is None else f"{v:.0f}"  # noqa: E731
            print(
                f"| {m['variant']} | {m['impl']} | {fmt(m['peak_rss_mib'])} | "
                f"{fmt(m['rss_after_build_mib'])} | {fmt(m['peak_rss_stages_mib'])} |"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--variants", default=None, help=f"comma-separated variant names (default {DEFAULT_VARIANTS})"
    )
    p.add_argument(
        "--image-size", type=int, default=None, help="model input size S (default 1024; 256 with --quick)"
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed repeats per stage after one warm-up (default 3; stages under 1 s get at least 15)",
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N or mps")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: tiny only, S=256, 1 repeat (explicit flags win)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-RSS child processes")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    p.add_argument("--only", choices=("ours", "ref"), help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.variants is None:
        args.variants = QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS
    if args.image_size is None:
        args.image_size = 256 if args.quick else 1024
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.only:
        child_main(args, device)
        return
    info = machine_info(args, device)
    print(json.dumps(info), flush=True)
    rows, memory = [], []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
            ckpt = Path(tmp) / f"{variant}.pt"
            rows += bench_variant(variant, args, device, ckpt)
            gc.collect()
            if not args.no_memory:
                for impl in ("ours", "ref"):
                    memory.append(measure_memory(variant, impl, args, ckpt))
                    print(f"[{variant}] {impl} peak RSS {memory[-1]['peak_rss_mib']:.0f} MiB", flush=True)
    info["total_s"] = time.perf_counter() - start
    with contextlib.suppress(OSError):
        info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
    print_tables(rows, memory)
    print(f"\ntotal {info['total_s']:.0f} s; ratio < 1 means ours is faster (median of paired ratios)")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "timings": rows, "memory": memory}, indent=2))


if __name__ == "__main__":
    main()
