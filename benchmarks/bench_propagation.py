"""Propagation speed and memory: our tracker against Meta's video predictor on identical weights.

Cases (each side by side in one process, same seeded random weights, same frames and prompts):

1. ``whole S``: frames of S x S pixels, one click on frame 0, propagation to the end. Ours runs
   :meth:`Tracker.run` on the reference's own preprocessed frames, so both see the same input;
   the masks are compared (max logit difference, and whether every mask is identical).
2. ``microscopy``: 2048 x 2048 frames with three small moving discs, sam2.1 tiny at 1024. The
   reference squashes every frame to 1024 x 1024; ours tracks each object at native resolution in
   a crop of 256 x 256 pixels that follows it (``Tracker(crop=256)``). With random weights
   the masks are not meaningful, so crops are capped at 256 (``max_crop``) to time the mode
   itself; results are not compared (they differ by design: other pixels, another input size).

Timing order is ref, ours, ours, ref (ABBA), with one torch thread by default: on a 2-core machine
shared with other work, two threads make small matrix products up to 20x slower while a neighbour
holds the other core, which would measure the neighbour rather than the code; the ratio is total ref time / total ours time
(> 1: ours is faster). Peak RSS versus stack length comes from fresh processes running a keyframe
run over a lazy zarr stack of 50, 200 and 1000 frames (a small random model at 256, as in
``tests/test_propagation_memory.py``).

Usage::

    .venv/bin/python benchmarks/bench_propagation.py             # 512, 1024, microscopy, RSS (~15 min)
    .venv/bin/python benchmarks/bench_propagation.py --quick     # 256 only, 4 frames, RSS 50/200
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from napari_sam2.engine import FrameSequence, Prompt, Tracker  # noqa: E402
from reference import build_reference, ours_from  # noqa: E402
from test_propagation_memory import peak_mib  # noqa: E402

VARIANT = "sam2.1_hiera_tiny"


def write_frames(folder: Path, n: int, size: int, discs: list[tuple[int, int, int]], step: int) -> np.ndarray:
    """Grey noisy frames with bright discs (row, col, radius) moving right by ``step`` px per frame,
    saved as JPEG (what the reference reads) and returned as decoded (n, size, size, 3) uint8."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[:size, :size]
    frames = []
    for i in range(n):
        img = np.full((size, size), 40.0)
        for r, c, rad in discs:
            img[(yy - r) ** 2 + (xx - c - step * i) ** 2 < rad**2] = 200.0
        img = np.clip(img + rng.normal(0, 12, img.shape), 0, 255).astype(np.uint8)
        Image.fromarray(np.stack([img] * 3, axis=-1)).save(folder / f"{i}.jpg", quality=95)
        frames.append(np.asarray(Image.open(folder / f"{i}.jpg").convert("RGB")))
    return np.stack(frames)


def time_ref(ref, state, prompts):
    ref.reset_state(state)
    start = time.perf_counter()
    for obj, (r, c) in prompts.items():
        ref.add_new_points_or_box(
            state, 0, obj, points=np.array([[c, r]], np.float32), labels=np.array([1], np.int32)
        )
    out = {t: masks[:, 0].clone() for t, _, masks in ref.propagate_in_video(state)}
    return time.perf_counter() - start, out


def time_ours(make_tracker, prompts):
    tracker = make_tracker()
    start = time.perf_counter()
    for obj, (r, c) in prompts.items():
        tracker.add_prompt(0, obj, Prompt(points=[[r, c]], labels=[1]))
    out = {f: {o: p.full(tracker.frame_hw) for o, p in ps.items()} for f, ps in tracker.track()}
    return time.perf_counter() - start, out


def abba(run_ref, run_ours):
    t_ref1, ref_out = run_ref()
    t_ours1, ours_out = run_ours()
    t_ours2, _ = run_ours()
    t_ref2, _ = run_ref()
    return (t_ref1 + t_ref2) / 2, (t_ours1 + t_ours2) / 2, ref_out, ours_out


def whole_frame_case(size: int, n: int, tmp: Path) -> dict:
    ref = build_reference(VARIANT, size, seed=1, video=True)
    model = ours_from(ref, tmp / f"w{size}.pt", VARIANT, size)
    write_frames(tmp / f"clip{size}", n, size, [(size // 2, size // 4, size // 10)], step=size // 40)
    state = ref.init_state(str(tmp / f"clip{size}"))
    images = state["images"]  # the reference's preprocessing: both sides see the same tensors
    prompts = {1: (size // 2, size // 4)}
    with torch.inference_mode():
        t_ref, t_ours, ref_out, ours_out = abba(
            lambda: time_ref(ref, state, prompts),
            lambda: time_ours(
                lambda: Tracker(model, lambda i: images[i], n, (size, size), crop=None), prompts
            ),
        )
    diff = max(float((ref_out[t][0] - torch.from_numpy(ours_out[t][1])).abs().max()) for t in ref_out)
    same = all(torch.equal(ref_out[t][0] > 0, torch.from_numpy(ours_out[t][1]) > 0) for t in ref_out)
    return {
        "case": f"whole {size}",
        "frames": n,
        "ref_s": t_ref,
        "ours_s": t_ours,
        "max_logit_diff": diff,
        "masks_identical": same,
    }


def microscopy_case(n: int, tmp: Path) -> dict:
    size = 2048
    ref = build_reference(VARIANT, 1024, seed=1, video=True)
    model = ours_from(ref, tmp / "w1024.pt", VARIANT, 1024)
    discs = [(400, 300, 22), (1200, 900, 30), (1700, 1500, 18)]
    frames = write_frames(tmp / "micro", n, size, discs, step=6)
    state = ref.init_state(str(tmp / "micro"))
    seq = FrameSequence(frames, axis="z", window=(0, 255), image_size=1024, cache_size=0)
    prompts = {i + 1: (r, c) for i, (r, c, _) in enumerate(discs)}
    with torch.inference_mode():
        t_ref, t_ours, _, _ = abba(
            lambda: time_ref(ref, state, prompts),
            lambda: time_ours(lambda: Tracker(model, seq, n, seq.frame_hw, crop=256, max_crop=256), prompts),
        )
    return {"case": "microscopy 2048, 3 objects, window 256", "frames": n, "ref_s": t_ref, "ours_s": t_ours}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 256 only, 4 frames, RSS at 50/200 frames"
    )
    parser.add_argument("--frames", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1: steady on a shared 2-core machine)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sizes = [256] if args.quick else [512, 1024]
        n = 4 if args.quick else args.frames
        for size in sizes:
            rows.append(whole_frame_case(size, n, tmp))
            print(json.dumps(rows[-1]), flush=True)
        if not args.quick:
            rows.append(microscopy_case(n, tmp))
            print(json.dumps(rows[-1]), flush=True)
        lengths = (50, 200) if args.quick else (50, 200, 1000)
        rss = {k: peak_mib(k, tmp / f"rss{k}") for k in lengths}
    print(f"\ntorch threads: {args.threads}")
    print("case                                     frames  ref s/frame  ours s/frame  speed-up  identical")
    for r in rows:
        same = r.get("masks_identical")
        note = "n/a (by design)" if same is None else f"{same} (max diff {r['max_logit_diff']:.1e})"
        print(
            f"{r['case']:<40} {r['frames']:>6} {r['ref_s'] / r['frames']:>12.3f} {r['ours_s'] / r['frames']:>13.3f}"
            f" {r['ref_s'] / r['ours_s']:>9.2f}x  {note}"
        )
    print(
        "\npeak RSS of a keyframe run vs stack length (MiB): "
        + ", ".join(f"{k}: {v}" for k, v in rss.items())
    )
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "peak_rss_mib": rss}, indent=2))


if __name__ == "__main__":
    main()
