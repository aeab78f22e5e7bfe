"""Segment everything: our generator against Meta's ``SAM2AutomaticMaskGenerator`` on identical weights,
and throughput on a large plane.

Cases:

1. ``parity S``: sam2.1 tiny at input size S with seeded random weights (mask-token heads scaled
   so that masks are decisive), one 8-bit RGB image with bright discs, ``points_per_side`` clicks
   per side and SAM2's default filters except the IoU/stability thresholds (random weights predict
   IoUs near 0.5). Timing order ref, ours, ours, ref (ABBA), one torch thread by default; the ratio
   is total ref time / total ours time (> 1: ours is faster). Masks are compared (count, identical).
   At S != 1024 the reference image predictor needs its hard-coded feature sizes replaced, done
   here as in ``tests/test_automask.py``.
2. ``plane N``: a fresh process runs :func:`segment_everything` on an N x N plane of discs with the
   demo architecture (random weights, 256-pixel tiles): seconds, megapixels per second, masks
   found and peak RSS. Random weights find little, so this times the machinery (encoding every
   tile, decoding every click, seams, merge), not segmentation quality.

Usage::

    .venv/bin/python benchmarks/bench_automask.py                 # parity 1024 (16 points), plane 4096
    .venv/bin/python benchmarks/bench_automask.py --quick         # parity 256, plane 1024
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent / "tests"))
sys.path.insert(0, str(ROOT))

from _common import run_result_child  # noqa: E402

VARIANT = "sam2.1_hiera_tiny"


def discs(h: int, w: int, n: int, seed: int = 0, rgb: bool = True) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.full((h, w), 30.0)
    yy, xx = np.ogrid[:h, :w]
    for _ in range(n):
        r, c, rad = rng.integers(0, h), rng.integers(0, w), rng.integers(8, 40)
        img[(yy - r) ** 2 + (xx - c) ** 2 < rad**2] = rng.integers(120, 230)
    img = np.clip(img + rng.normal(0, 10, img.shape), 0, 255).astype(np.uint8)
    return np.stack([img] * 3, axis=-1) if rgb else img


def parity_case(size: int, points: int, tmp: Path) -> dict:
    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

    from napari_sam2.engine.automask import generate_masks
    from reference import build_reference, ours_from

    ref = build_reference(VARIANT, size, seed=3)
    with torch.no_grad():
        for mlp in ref.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[2].weight.mul_(300.0)
    ours = ours_from(ref, tmp / f"w{size}.pt", VARIANT, size)
    opts = {"points_per_side": points, "pred_iou_thresh": 0.5, "stability_score_thresh": 0.9}
    gen = SAM2AutomaticMaskGenerator(ref, **opts)
    gen.predictor._bb_feat_sizes = [(size // 4,) * 2, (size // 8,) * 2, (size // 16,) * 2]
    img = discs(600, 800, 12)

    def run_ref():
        t = time.perf_counter()
        out = gen.generate(img)
        return time.perf_counter() - t, [a["segmentation"] for a in out]

    def run_ours():
        t = time.perf_counter()
        out = generate_masks(
            ours, img, window=(0, 255), tile_size=max(img.shape[:2]), **opts
        )  # whole, as SAM2
        return time.perf_counter() - t, [m.full(img.shape[:2]) for m in out]

    with torch.inference_mode():
        t_ref1, ref_masks = run_ref()
        t_ours1, our_masks = run_ours()
        t_ours2, _ = run_ours()
        t_ref2, _ = run_ref()
    same = len(ref_masks) == len(our_masks) and all(
        np.array_equal(a, b) for a, b in zip(ref_masks, our_masks)
    )
    return {
        "case": f"parity {size}",
        "image": "600x800 RGB",
        "points": points * points,
        "ref_s": (t_ref1 + t_ref2) / 2,
        "ours_s": (t_ours1 + t_ours2) / 2,
        "masks": len(our_masks),
        "masks_identical": same,
    }


def plane_child(n: int, points: int, threads: int) -> None:
    """Child process: time segment_everything on an n x n plane; print a RESULT line."""
    from napari_sam2.engine.automask import segment_everything
    from napari_sam2.model import Sam2Model
    from napari_sam2.model.config import DEMO_CONFIG

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = Sam2Model(DEMO_CONFIG).eval()
    img = discs(n, n, n * n // 20000, rgb=False)
    with torch.inference_mode():
        t = time.perf_counter()
        report = segment_everything(model, img, window=(0, 255), points_per_side=points)
        dt = time.perf_counter() - t
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "RESULT "
        + json.dumps({"plane": n, "seconds": dt, "objects": len(report.objects), "peak_rss_mib": round(rss)})
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="parity at 256, plane 1024")
    parser.add_argument("--points", type=int, default=16, help="points per side in the parity case")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--plane-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--plane-points", type=int, default=16, help="points per tile side on the large plane"
    )
    args = parser.parse_args()
    if args.plane_child:
        plane_child(args.plane_child, args.plane_points, args.threads)
        return
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        parity = parity_case(256 if args.quick else 1024, args.points, Path(tmp))
    print(json.dumps(parity), flush=True)
    n = 1024 if args.quick else 4096
    cmd = [sys.executable, __file__, "--plane-child", str(n), "--plane-points", str(args.plane_points)]
    cmd += ["--threads", str(args.threads)]
    plane = run_result_child(cmd, f"plane {n}")
    print(json.dumps(plane), flush=True)
    print(f"\ntorch threads: {args.threads}")
    print(
        f"{parity['case']}: {parity['points']} clicks, ref {parity['ref_s']:.2f} s, ours {parity['ours_s']:.2f} s, "
        f"speed-up {parity['ref_s'] / parity['ours_s']:.2f}x, {parity['masks']} masks, identical: {parity['masks_identical']}"
    )
    print(
        f"plane {n} x {n} (demo architecture, 256-px tiles, {args.plane_points}^2 clicks per tile): "
        f"{plane['seconds']:.1f} s, {n * n / 1e6 / plane['seconds']:.2f} Mpx/s, peak RSS {plane['peak_rss_mib']} MiB"
    )
    if args.json:
        args.json.write_text(json.dumps({"parity": parity, "plane": plane}, indent=2))


if __name__ == "__main__":
    main()
