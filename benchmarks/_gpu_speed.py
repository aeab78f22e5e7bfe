"""Ours against Meta's reference on the same random weights and inputs, for benchmarks/gpu_check.py.

One :class:`Pair` per variant holds both models (the reference's video predictor, which is also a
full SAM2 image model, and ours loaded from its checkpoint) on the device. Each measurement runs in
a *precision*: ``fp32``; ``bf16`` (the whole call under ``torch.autocast(bfloat16)``, weights
stay float32, as Meta's own examples run the reference); ``compile`` (fp32 with the image
encoder's ``forward`` wrapped by ``torch.compile`` on both sides, the part of SAM2 that compiles
as one static graph).

Timing: a warm-up call of each side (on CUDA: lazy initialisation, kernel selection, compilation),
then ``repeats`` pairs in alternating order (ours, ref, ref, ours, ...), each call between device
synchronisations; medians are reported. Peak memory is read around one call of each side:
``torch.cuda.max_memory_allocated`` on CUDA, the resident-set high-water mark (VmHWM after a reset)
on CPU.
"""

from __future__ import annotations

import contextlib
import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from bench_model import OursStages, RefStages, _proc_status_kib, _reset_peak_rss, make_inputs, ru_maxrss_mib
from bench_propagation import write_frames

PRECISIONS = ("fp32", "bf16", "compile")
MASK_HEAD_SCALE = 300.0
"""Random weights give mask logits near 0, where any rounding flips pixels; scaling the mask-token
heads (as benchmarks/bench_automask.py does) makes masks decisive, as trained weights are."""


# ---------------------------------------------------------------------------- device helpers
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class PeakMemory:
    """Memory of the calls inside ``with``: ``peak_mib`` (CUDA allocations, or the process's resident
    set, at their highest) and ``extra_mib`` (that peak less what was held on entry: the call's own
    working memory, both models' weights excluded)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.peak_mib, self.extra_mib, self.kind, self._base = device, None, None, None, 0.0

    def __enter__(self) -> PeakMemory:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "cuda max_memory_allocated"
        else:
            self.kind = "RSS high-water mark" if _reset_peak_rss() else "process peak RSS (ru_maxrss)"
            self._base = (_proc_status_kib("VmRSS") or 0) / 1024
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            hwm = _proc_status_kib("VmHWM") if self.kind == "RSS high-water mark" else None
            self.peak_mib = hwm / 1024 if hwm is not None else ru_maxrss_mib()
        self.extra_mib = max(self.peak_mib - self._base, 0.0)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, Any]:
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def paired(run_ours, run_ref, device: torch.device, repeats: int, warmup: bool) -> dict:
    """Median seconds of each side, alternating order; memory of one call each.

    A side that raises is recorded in ``errors`` and the other side is still timed (a failure of
    ours on the device still gives the reference's figure, and the other way round).
    """
    sides = {"ours": run_ours, "ref": run_ref}
    times: dict[str, list[float]] = {"ours": [], "ref": []}
    mem: dict[str, PeakMemory] = {}
    outputs: dict[str, Any] = {"ours": None, "ref": None}
    errors: dict[str, str] = {}
    for side, fn in sides.items():
        try:
            if warmup:
                timed(fn, device)
            with PeakMemory(device) as mem[side]:
                t, outputs[side] = timed(fn, device)
            times[side].append(t)
        except Exception as exc:  # recorded; the other side still runs
            errors[side] = f"{type(exc).__name__}: {exc}"[:500]
            outputs[side] = None
    live = [side for side in sides if side not in errors]
    if not live:
        raise RuntimeError("both sides failed: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    for i in range(repeats - 1):  # ref, ours, ours, ref, ...: neither side always runs first
        for side in live[::-1] if i % 2 == 0 else live:
            t, _ = timed(sides[side], device)
            times[side].append(t)
    med = {side: statistics.median(times[side]) if times[side] else None for side in sides}
    row = {
        "ours_s": med["ours"],
        "ref_s": med["ref"],
        "speedup": med["ref"] / med["ours"] if med["ours"] and med["ref"] else None,  # > 1: ours is faster
        "repeats": repeats,
        "_outputs": (outputs["ours"], outputs["ref"]),
    }
    for side in sides:
        if side in mem and mem[side].peak_mib is not None:
            row[f"{side}_peak_mib"] = mem[side].peak_mib
            row[f"{side}_extra_mib"] = mem[side].extra_mib
            row["memory_kind"] = mem[side].kind
    if errors:
        row["errors"] = errors
    return row


# ---------------------------------------------------------------------------- mask comparisons
def mask_agreement(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> dict:
    """IoU and differing pixels of two boolean masks (any shape, same shape)."""
    a = torch.as_tensor(a).bool().cpu()
    b = torch.as_tensor(b).bool().cpu()
    union = int((a | b).sum())
    inter = int((a & b).sum())
    return {"iou": 1.0 if union == 0 else inter / union, "differing_px": int((a ^ b).sum()), "px": a.numel()}


def agreement_summary(pairs: list[tuple[Any, Any]]) -> dict:
    """Per-mask IoU (mean and min) and differing pixels (total, fraction) over many mask pairs."""
    rows = [mask_agreement(a, b) for a, b in pairs]
    if not rows:
        return {"masks": 0}
    ious = [r["iou"] for r in rows]
    diff, px = sum(r["differing_px"] for r in rows), sum(r["px"] for r in rows)
    return {
        "masks": len(rows),
        "iou_mean": float(np.mean(ious)),
        "iou_min": float(np.min(ious)),
        "differing_px": diff,
        "differing_fraction": diff / px,
        "identical": diff == 0,
    }


def matched_iou(found: list[np.ndarray], other: list[np.ndarray]) -> dict:
    """For each mask of ``found``, its best IoU among ``other`` (automatic masks come unordered)."""
    if not found or not other:
        return {"masks": len(found), "other_masks": len(other), "iou_mean": None, "iou_min": None}
    best = []
    for m in found:
        ious = [np.logical_and(m, o).sum() / max(np.logical_or(m, o).sum(), 1) for o in other]
        best.append(float(max(ious)))
    return {
        "masks": len(found),
        "other_masks": len(other),
        "iou_mean": float(np.mean(best)),
        "iou_min": float(np.min(best)),
    }


# ---------------------------------------------------------------------------- the two models
@dataclass
class Pair:
    variant: str
    image_size: int
    device: torch.device
    ref: Any  # sam2.sam2_video_predictor.SAM2VideoPredictor
    ours: Any  # napari_sam2.model.Sam2Model

    @classmethod
    def build(cls, variant: str, image_size: int, device: torch.device) -> Pair:
        """Seeded random weights drawn by the reference, saved as an official checkpoint, loaded by ours;
        the mask-token heads scaled on both (MASK_HEAD_SCALE)."""
        from reference import build_reference, ours_from

        ref = build_reference(variant, image_size, seed=0, video=True)
        with torch.no_grad():
            for mlp in ref.sam_mask_decoder.output_hypernetworks_mlps:
                mlp.layers[2].weight.mul_(MASK_HEAD_SCALE)
        with tempfile.TemporaryDirectory() as tmp:
            ours = ours_from(ref, Path(tmp) / "weights.pt", variant, image_size)
        return cls(variant, image_size, device, ref.to(device).eval(), ours.to(device).eval())

    @contextlib.contextmanager
    def compiled_encoders(self):
        """Both image encoders' forward wrapped by torch.compile (static shapes), restored on exit.
        Re-entrant: inside an outer ``with``, the compiled graphs are reused, not compiled again."""
        if getattr(self, "_compiled", False):
            yield
            return
        encoders = (self.ours.image_encoder, self.ref.image_encoder)
        for enc in encoders:
            enc.forward = torch.compile(enc.forward, dynamic=False)
        self._compiled = True
        try:
            yield
        finally:
            self._compiled = False
            for enc in encoders:
                del enc.forward  # the class's forward again
            torch._dynamo.reset()


def _precision(pair: Pair, precision: str):
    """(autocast or null context, compile context) for one precision."""
    ctx = precision_context(precision, pair.device)
    comp = pair.compiled_encoders() if precision == "compile" else contextlib.nullcontext()
    return ctx, comp


# ---------------------------------------------------------------------------- encode, click, step
def model_stages(pair: Pair, precision: str, repeats: int, warmup: bool) -> dict:
    """encode / click / memory step (see benchmarks/bench_model.py) in one precision; a stage that
    fails is recorded in its row (``errors``) and the next one still runs where it can."""
    inputs = make_inputs(pair.image_size, pair.device)
    ours, ref = OursStages(pair.ours, inputs), RefStages(pair.ref, inputs)
    out: dict[str, Any] = {}
    ctx, comp = _precision(pair, precision)
    with torch.inference_mode(), comp, ctx:
        for stage in ("encode", "click", "step"):
            run = {}
            for side, stages in (("ours", ours), ("ref", ref)):
                run[side] = getattr(stages, stage)
                if stage == "step":
                    try:
                        stages.prepare_memories()
                    except Exception as exc:  # that side's step fails with this error
                        run[side] = _raiser(exc)
            try:
                row = paired(run["ours"], run["ref"], pair.device, repeats, warmup)
            except Exception as exc:
                out[stage] = {"errors": {"both": f"{type(exc).__name__}: {exc}"[:500]}}
                continue
            o, r = row.pop("_outputs")
            if stage == "click":
                row["masks"] = (
                    None if o is None else (o.masks > 0).cpu(),
                    None if r is None else (r[0] > 0).cpu(),
                )
            elif stage == "step":
                row["masks"] = (
                    None if o is None else (o[0].low_res > 0).cpu(),
                    None if r is None else (r["pred_masks"] > 0).cpu(),
                )
            out[stage] = row
    return out


def _raiser(exc: Exception) -> Callable[[], Any]:
    def run():
        raise exc

    return run


# ---------------------------------------------------------------------------- propagation
def object_points(n: int, size: int) -> list[tuple[int, int]]:
    """(row, col) centres of n discs on a grid that keeps them apart."""
    side = int(np.ceil(np.sqrt(n)))
    step = size // (side + 1)
    return [(step * (1 + i // side), step * (1 + i % side)) for i in range(n)]


class Clip:
    """A clip of bright discs moving right, as JPEG frames both sides read; the reference's state."""

    def __init__(self, pair: Pair, frames: int, objects: int, folder: Path) -> None:
        size = pair.image_size
        self.points = object_points(objects, size)
        radius = max(4, size // (4 * int(np.ceil(np.sqrt(objects))) + 4))
        write_frames(folder, frames, size, [(r, c, radius) for r, c in self.points], step=max(1, size // 128))
        self.pair, self.frames, self.size = pair, frames, size
        self.state = pair.ref.init_state(str(folder))
        self.images = self.state["images"]  # the reference's own preprocessing: both sides see the same input

    def run_ref(self, max_frames: int | None = None) -> list[dict[int, torch.Tensor]]:
        ref, state = self.pair.ref, self.state
        ref.reset_state(state)
        for obj, (r, c) in enumerate(self.points, start=1):
            ref.add_new_points_or_box(
                state, 0, obj, points=np.array([[c, r]], np.float32), labels=np.array([1], np.int32)
            )
        out = []
        for _, ids, masks in ref.propagate_in_video(state, max_frame_num_to_track=max_frames):
            out.append({int(i): masks[k, 0] > 0 for k, i in enumerate(ids)})
        return out

    def run_ours(self, max_frames: int | None = None) -> list[dict[int, torch.Tensor]]:
        from napari_sam2 import Prompt, Tracker

        images = self.images
        tracker = Tracker(
            self.pair.ours, lambda i: images[i], self.frames, (self.size, self.size), window=None
        )
        for obj, (r, c) in enumerate(self.points, start=1):
            tracker.add_prompt(0, obj, Prompt(points=[[r, c]], labels=[1]))
        return [
            {o: v > 0 for o, v in logits.items()} for _, logits in tracker.propagate(max_frames=max_frames)
        ]


def propagation(pair: Pair, clip: Clip, precision: str, repeats: int, warmup: bool) -> dict:
    """One click per object on frame 0, then propagation to the last frame. The timed call holds
    the clicks (one encode of frame 0 and one decode per object, on both sides) and the
    propagation, which encodes every other frame once; frames/s = frames / seconds."""
    ctx, comp = _precision(pair, precision)
    with torch.inference_mode(), comp, ctx:
        if warmup:  # two frames each: lazy initialisation and (compile) tracing
            for run in (clip.run_ours, clip.run_ref):
                with contextlib.suppress(Exception):  # a side that fails fails again, recorded, in paired()
                    run(max_frames=1)
        row = paired(clip.run_ours, clip.run_ref, pair.device, repeats, warmup=False)
    o, r = row.pop("_outputs")
    return row | {"frames": clip.frames, "objects": len(clip.points), "masks": (o, r)}


def frames_per_second(row: dict) -> tuple[float | None, float | None]:
    return tuple(row["frames"] / row[k] if row.get(k) else None for k in ("ours_s", "ref_s"))


# ---------------------------------------------------------------------------- segment everything
def discs_rgb(h: int, w: int, n: int, seed: int = 0) -> np.ndarray:
    from bench_automask import discs

    return discs(h, w, n, seed=seed)


def everything(
    pair: Pair, image: np.ndarray, points: int, precision: str, repeats: int, warmup: bool
) -> dict:
    """Our generate_masks against SAM2AutomaticMaskGenerator.generate on one RGB image."""
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from napari_sam2.engine import generate_masks

    size = pair.image_size
    opts = {"points_per_side": points, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.9}
    gen = SAM2AutomaticMaskGenerator(pair.ref, **opts)
    gen.predictor._bb_feat_sizes = [(size // 4,) * 2, (size // 8,) * 2, (size // 16,) * 2]

    def run_ref():
        return [a["segmentation"] for a in gen.generate(image)]

    def run_ours():
        masks = generate_masks(pair.ours, image, window=(0, 255), tile_size=max(image.shape[:2]), **opts)
        return [m.full(image.shape[:2]) for m in masks]

    ctx, comp = _precision(pair, precision)
    with torch.inference_mode(), comp, ctx:
        row = paired(run_ours, run_ref, pair.device, repeats, warmup)
    o, r = row.pop("_outputs")
    row |= {"points": points * points, "masks": (o, r)}
    row["ours_masks"], row["ref_masks"] = (None if m is None else len(m) for m in (o, r))
    if o is not None and r is not None:
        row["ours_equal_ref"] = len(o) == len(r) and all(np.array_equal(a, b) for a, b in zip(o, r))
    return row
