"""The public API end to end with the demo model, for benchmarks/gpu_check.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from _gpu_report import guarded, stage_status


# ---------------------------------------------------------------------------- the public API end to end
class ApiCase:
    """The demo model on the device and on the CPU, a generated nuclei stack and one click per nucleus."""

    def __init__(self, args) -> None:
        import numpy as np

        from napari_sam2 import Prompt, load_model
        from napari_sam2.training import synthetic
        from napari_sam2.training.evaluate import click_point

        shape, n, seed, radius = args.sizes["api_stack"]
        kwargs = {} if radius is None else {"radius": radius}
        self.stack = synthetic.nuclei_3d(shape, n, seed=seed, **kwargs)
        self.model = load_model("demo", device=args.device)
        self.cpu_model = load_model("demo", device="cpu") if args.device != "cpu" else self.model
        self.device = args.device
        self.prompts, self.keyframe = {}, {}
        for obj in np.unique(self.stack.labels)[1:]:
            f = int((self.stack.labels == obj).sum(axis=(1, 2)).argmax())
            self.keyframe[int(obj)] = f
            self.prompts[(f, int(obj))] = Prompt(
                points=[click_point(self.stack.labels[f] == obj)], labels=[1]
            )

    def bf16(self):
        import torch

        return torch.autocast(torch.device(self.device).type, dtype=torch.bfloat16)


def compare_cpu(results: dict, key: str, fn: Callable[[], dict], args) -> None:
    """The same call with the model on the CPU, unless the device is the CPU."""
    if torch_device_type(args.device) == "cpu":
        results[key] = {"status": "skipped", "reason": "the device is the CPU"}
    else:
        guarded(results, key, fn, args.report)


def torch_device_type(device: str) -> str:
    return device.split(":")[0]


def _iou(a, b) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def label_agreement(a, b) -> dict:
    import numpy as np

    a, b = np.asarray(a), np.asarray(b)
    ids = sorted(set(np.unique(a)) | set(np.unique(b)) - {0})
    ious = [_iou(a == i, b == i) for i in ids if i]
    diff = int((a != b).sum())
    return {"objects": len(ious), "iou_mean": float(np.mean(ious)) if ious else None,
            "iou_min": float(np.min(ious)) if ious else None, "differing_px": diff,
            "differing_fraction": diff / a.size, "identical": diff == 0}  # fmt: skip


def stage_api_click(case: ApiCase, args) -> dict:
    from napari_sam2 import segment

    truth, image = case.stack.labels, case.stack.image
    results: dict[str, Any] = {}
    runs = {}

    def fp32():
        t0 = time.perf_counter()
        labels = segment(image, case.prompts, model=case.model).labels
        dt = time.perf_counter() - t0
        runs["fp32"] = labels
        ious = [_iou(labels[f] == o, truth[f] == o) for (f, o) in case.prompts]
        return {"objects": len(ious), "iou_vs_truth_mean": sum(ious) / len(ious), "iou_vs_truth_min": min(ious),
                "total_s": dt, "per_click_s": dt / len(ious)}  # fmt: skip

    def cpu():
        labels = segment(image, case.prompts, model=case.cpu_model).labels
        return label_agreement(runs["fp32"], labels)

    def bf16():
        with case.bf16():
            labels = segment(image, case.prompts, model=case.model).labels
        return label_agreement(runs["fp32"], labels)

    guarded(results, "fp32", fp32, args.report)
    if "fp32" in runs:
        compare_cpu(results, "device_vs_cpu", cpu, args)
        guarded(results, "fp32_vs_bf16", bf16, args.report)
    return stage_status(results)


def stage_api_propagate(case: ApiCase, args) -> dict:
    import numpy as np

    from napari_sam2 import propagate

    truth, image = case.stack.labels, case.stack.image
    results: dict[str, Any] = {}
    runs = {}

    def fp32():
        t0 = time.perf_counter()
        labels = np.asarray(propagate(image, case.prompts, model=case.model).labels)
        dt = time.perf_counter() - t0
        runs["fp32"] = labels
        per_obj = []
        for _, o in case.prompts:
            frames = [f for f in range(len(truth)) if (truth[f] == o).any() or (labels[f] == o).any()]
            per_obj.append(float(np.mean([_iou(labels[f] == o, truth[f] == o) for f in frames])))
        return {"objects": len(per_obj), "frames": len(truth), "iou_vs_truth_mean": float(np.mean(per_obj)),
                "iou_vs_truth_min": float(np.min(per_obj)), "total_s": dt, "frames_per_s": len(truth) / dt}  # fmt: skip

    def cpu():
        return label_agreement(runs["fp32"], propagate(image, case.prompts, model=case.cpu_model).labels)

    def bf16():
        with case.bf16():
            labels = propagate(image, case.prompts, model=case.model).labels
        return label_agreement(runs["fp32"], labels)

    guarded(results, "fp32", fp32, args.report)
    if "fp32" in runs:
        compare_cpu(results, "device_vs_cpu", cpu, args)
        guarded(results, "fp32_vs_bf16", bf16, args.report)
    return stage_status(results)


def stage_api_everything(case: ApiCase, args) -> dict:
    import numpy as np

    from napari_sam2 import segment_everything

    image = case.stack.image
    mid = len(image) // 2
    points = args.sizes["api_points"]
    results: dict[str, Any] = {}
    runs = {}

    def call(model, what):
        data = image[mid] if what == "plane" else image
        extra = {} if what == "plane" else {"seed_frames": [mid]}
        return np.asarray(
            segment_everything(data, model=model, points_per_side=points, min_area=20, **extra).labels
        )

    for what in ("plane", "stack"):

        def fp32(what=what):
            t0 = time.perf_counter()
            runs[what] = call(case.model, what)
            return {"objects": int(len(np.unique(runs[what])) - 1), "total_s": time.perf_counter() - t0,
                    "points_per_side": points}  # fmt: skip

        def cpu(what=what):
            return label_agreement(runs[what], call(case.cpu_model, what))

        def bf16(what=what):
            with case.bf16():
                return label_agreement(runs[what], call(case.model, what))

        guarded(results, f"{what}_fp32", fp32, args.report)
        if what in runs:
            compare_cpu(results, f"{what}_device_vs_cpu", cpu, args)
            guarded(results, f"{what}_fp32_vs_bf16", bf16, args.report)
    return stage_status(results)
