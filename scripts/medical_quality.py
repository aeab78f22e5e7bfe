"""Propagation along z on the shared CT, MR and brain-MRI volumes: one box, the object's extent found?

For each object: the box around the truth mask on its largest slice is the only prompt; the model
propagates up and down the stack with ``stop_after_absent`` (an object that disappears for that many
slices is no longer followed). Reported per object: 3D IoU with the truth, the IoU on the prompted
slice, the slices where the prediction is non-empty against the truth's extent, and the time.

Volumes (``../shared/data``, see its README): TotalSegmentator's CT and MR examples (3 mm voxels;
organ masks are TotalSegmentator's predictions) and pyradiomics' brain MRI (0.78 x 0.78 x 6.5 mm)
with its tumour mask. The intensity window is the reader's default: a CT preset for the CT, robust
percentiles for the MRs.

Usage::

    .venv/bin/python scripts/medical_quality.py                     # demo model, stop_after_absent=2
    .venv/bin/python scripts/medical_quality.py --model sam2.1_hiera_tiny --stop-after-absent 1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
# (name, image, labels, object ids): TotalSegmentator ids 1 spleen, 2 right kidney, 3 left kidney, 5 liver
CASES = (
    (
        "CT liver",
        "ct-mr-totalsegmentator/example_ct_sm.nii.gz",
        "ct-mr-totalsegmentator/example_seg.nii.gz",
        5,
    ),
    (
        "CT spleen",
        "ct-mr-totalsegmentator/example_ct_sm.nii.gz",
        "ct-mr-totalsegmentator/example_seg.nii.gz",
        1,
    ),
    (
        "CT right kidney",
        "ct-mr-totalsegmentator/example_ct_sm.nii.gz",
        "ct-mr-totalsegmentator/example_seg.nii.gz",
        2,
    ),
    (
        "MR liver",
        "ct-mr-totalsegmentator/example_mr_sm.nii.gz",
        "ct-mr-totalsegmentator/example_seg_mr.nii.gz",
        5,
    ),
    (
        "MR spleen",
        "ct-mr-totalsegmentator/example_mr_sm.nii.gz",
        "ct-mr-totalsegmentator/example_seg_mr.nii.gz",
        1,
    ),
    (
        "brain tumour",
        "mri-tumour-pyradiomics/brain1_image.nrrd",
        "mri-tumour-pyradiomics/brain1_label.nrrd",
        1,
    ),
)


def shared_data() -> Path:
    for parent in ROOT.parents:
        if (parent / "shared" / "data" / "README.md").is_file():
            return parent / "shared" / "data"
    sys.exit("no shared/data folder above the project root")


def extent(mask: np.ndarray) -> tuple[int, int] | None:
    zs = np.nonzero(mask.reshape(mask.shape[0], -1).any(axis=1))[0]
    return (int(zs[0]), int(zs[-1])) if len(zs) else None


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def run_case(name, image, labels, obj, model, stop_after_absent) -> dict:
    from napari_sam2 import Prompt, propagate
    from napari_sam2.engine.medical import read_medical

    truth = read_medical(labels)[0] == obj
    z = int(np.argmax(truth.reshape(truth.shape[0], -1).sum(axis=1)))
    rows, cols = np.nonzero(truth[z])
    box = (int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max()))
    t0 = time.perf_counter()
    result = propagate(image, {(z, 1): Prompt(box=box)}, model=model, stop_after_absent=stop_after_absent)
    seconds = time.perf_counter() - t0
    pred = np.asarray(result.labels) == 1
    return {
        "case": name,
        "shape": list(truth.shape),
        "spacing_mm": result.record.image["medical"]["spacing_mm"],
        "window": result.record.window,
        "prompt_slice": z,
        "box": list(box),
        "iou_3d": round(iou(pred, truth), 3),
        "iou_prompt_slice": round(iou(pred[z], truth[z]), 3),
        "truth_extent": extent(truth),
        "predicted_extent": extent(pred),
        "truth_voxels": int(truth.sum()),
        "predicted_voxels": int(pred.sum()),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default="demo", help="model name or checkpoint (default: the shipped demo)"
    )
    parser.add_argument("--stop-after-absent", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from napari_sam2 import load_model

    model = load_model(args.model, device=args.device)
    data = shared_data()
    rows = []
    print(f"model {args.model}, stop_after_absent={args.stop_after_absent}")
    print(
        f"{'case':16} {'IoU 3D':>7} {'IoU z*':>7} {'z*':>4} {'truth z':>9} {'pred z':>9} {'vox pred/truth':>16} {'s':>5}"
    )
    for name, image, labels, obj in CASES:
        row = run_case(name, data / image, data / labels, obj, model, args.stop_after_absent)
        rows.append(row)
        te, pe = row["truth_extent"], row["predicted_extent"]
        print(
            f"{name:16} {row['iou_3d']:7.3f} {row['iou_prompt_slice']:7.3f} {row['prompt_slice']:4d} "
            f"{f'{te[0]}-{te[1]}':>9} {(f'{pe[0]}-{pe[1]}' if pe else 'none'):>9} "
            f"{row['predicted_voxels']:>7}/{row['truth_voxels']:<8} {row['seconds']:5.1f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
