"""One command that checks napari-sam2 on a GPU and times it against Meta's reference.

Stages, in order (each one guarded: a failure is recorded and the next stage runs):

1. ``environment``: versions, the device, the GPU.
2. ``install``: the Python packages the checks need that this interpreter lacks, from a folder of
   registry wheels (``--wheels``, made beforehand by ``--prepare-wheels`` on a machine with a
   network: the GPU machine has none) or else from the package index; into ``--site``, never
   system-wide, nothing from apt. ``--no-install`` skips it.
3. ``tests_parity``, ``tests_propagation``: pytest on the parity tests (ours vs the reference on
   identical weights, float32, the CPU tolerances: logits 1e-4, scores 1e-5, equal binary masks)
   and the propagation tests, with ``NAPARI_SAM2_TEST_DEVICE`` set to the device (tests/conftest.py);
   each pytest run gets at most 35 % and 20 % of the budget.
4. ``api_click``, ``api_propagate``, ``api_everything``: the public API (``segment``,
   ``propagate``, ``segment_everything``) end to end with the shipped demo model on a generated
   nuclei stack: IoU against the generator's truth, seconds, agreement with the same call on the
   CPU and with the same call under bfloat16 autocast.
5. ``speed_propagation``, ``speed_model``, ``speed_everything``, ``speed_compile``: ours against the
   reference (``sam2==1.1.0``) on the same seeded random weights and inputs: frames/s of a click
   followed through a clip with 1 and 8 objects; image encode, click decode and one memory step;
   segment everything; in float32 and bfloat16 autocast, and with the image encoders compiled
   (``torch.compile``). Peak GPU memory (``torch.cuda.max_memory_allocated``; on CPU the resident
   set's high-water mark) per side; masks compared between the two sides and between float32 and
   bfloat16 (IoU, differing pixels).

The stages live in ``_gpu_setup.py`` (1-3), ``_gpu_api.py`` (4) and ``_gpu_speed.py`` (5);
``_gpu_report.py`` holds the budget, the stage records and the markdown.

A global time budget (``--budget``) bounds the run: a stage that would not fit in what is left is
skipped and the reason recorded; a watchdog ends a stage that overruns. ``gpu_check.json`` and
``gpu_check.md`` are rewritten after every stage in ``--out`` (default ``$OUT``, else
benchmarks/out/gpu_check), so a run cut short still leaves its results.

Usage::

    .venv/bin/python benchmarks/gpu_check.py --prepare-wheels .whl   # here (network): wheels to carry
    python3 benchmarks/gpu_check.py --device cuda --out "$OUT"        # on the GPU machine (~7 min)
    .venv/bin/python benchmarks/gpu_check.py --device cpu --quick    # the same stages, tiny, on CPU
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "benchmarks", ROOT / "tests", ROOT / "src"):  # the working tree's code first
    sys.path.insert(0, str(_p))
os.environ.setdefault("TQDM_DISABLE", "1")  # the reference's progress bars

from _gpu_api import ApiCase, stage_api_click, stage_api_everything, stage_api_propagate  # noqa: E402
from _gpu_report import STAGES, Report, guarded, run_stage, stage_status  # noqa: E402
from _gpu_setup import add_site, prepare_wheels, stage_environment, stage_install, stage_pytest  # noqa: E402

__all__ = ["STAGES", "main"]


# ---------------------------------------------------------------------------- settings
def sizes(args) -> dict:
    """What each stage runs at: full sizes on a GPU, tiny ones with --quick."""
    if args.quick:
        return {
            "variants": ["sam2.1_hiera_tiny"],
            "image_size": 256,
            "frames": 3,
            "objects": (1, 8),
            "repeats": 1,
            "warmup": False,
            "everything_image": (200, 260, 6),
            "everything_points": 4,
            "api_stack": ((16, 96, 96), 4, 1, (7, 10)),  # shape, objects, seed, radius
            "api_points": 8,
        }
    return {
        "variants": ["sam2.1_hiera_tiny"],  # --variants adds others (large: about 3 min more)
        "image_size": 1024,
        "frames": 24,
        "objects": (1, 8),
        "repeats": 3,
        "warmup": True,
        "everything_image": (600, 800, 12),
        "everything_points": 32,
        "api_stack": ((32, 256, 256), 10, 9001, None),
        "api_points": 16,
    }


# ---------------------------------------------------------------------------- ours vs the reference
class Pairs:
    """One built Pair per variant, shared by the speed stages."""

    def __init__(self, args) -> None:
        self.args, self.pairs, self.clips = args, {}, {}
        self.tmp = tempfile.TemporaryDirectory()

    def get(self, variant: str):
        from _gpu_speed import Pair

        if variant not in self.pairs:
            import torch

            self.pairs[variant] = Pair.build(
                variant, self.args.sizes["image_size"], torch.device(self.args.device)
            )
        return self.pairs[variant]

    def clip(self, variant: str, objects: int):
        from _gpu_speed import Clip

        key = (variant, objects)
        if key not in self.clips:
            folder = Path(self.tmp.name) / f"{variant}-{objects}"
            self.clips[key] = Clip(self.get(variant), self.args.sizes["frames"], objects, folder)
        return self.clips[key]


def _ref_available() -> None:
    if importlib.util.find_spec("sam2") is None:
        raise RuntimeError("the reference sam2==1.1.0 is not installed (see the install stage)")


def stage_speed_propagation(
    pairs: Pairs, args, precisions=("fp32", "bf16"), objects=None, variants=None
) -> dict:
    from _gpu_speed import agreement_summary, frames_per_second, propagation

    _ref_available()
    sz, results = args.sizes, {}
    for variant in variants or sz["variants"]:
        for n in objects or sz["objects"]:
            masks = {}
            for precision in precisions:

                def measure(variant=variant, n=n, precision=precision, masks=masks):
                    row = propagation(
                        pairs.get(variant), pairs.clip(variant, n), precision, sz["repeats"], sz["warmup"]
                    )
                    row["ours_fps"], row["ref_fps"] = frames_per_second(row)
                    compare_masks(row, masks, precision, lambda a, b: agreement_summary(_frame_pairs(a, b)))
                    return row

                guarded(
                    results,
                    f"{variant} / {n} obj / {precision}",
                    measure,
                    args.report,
                    needs_s=_needs(args, variant),
                )
    return stage_status(results)


def compare_masks(row: dict, masks: dict, precision: str, summary, between_sides: bool = True) -> None:
    """Pop the row's (ours, ref) masks, keep them under ``masks[precision]`` and record: ours against
    the reference (same precision), and each side against its own float32 masks."""
    o, r = row.pop("masks")
    masks[precision] = (o, r)
    if between_sides and o is not None and r is not None:
        row["ours_vs_ref"] = summary(o, r)
    if precision != "fp32" and "fp32" in masks:
        for k, name in ((0, "ours_vs_ours_fp32"), (1, "ref_vs_ref_fp32")):
            a, b = masks["fp32"][k], (o, r)[k]
            if a is not None and b is not None:
                row[name] = summary(a, b)


def _frame_pairs(a: list[dict], b: list[dict]) -> list[tuple]:
    """Per frame and object, the two masks (missing objects count as empty)."""
    import torch

    out = []
    for fa, fb in zip(a, b):
        for obj in sorted(set(fa) | set(fb)):
            ma, mb = fa.get(obj), fb.get(obj)
            like = ma if ma is not None else mb
            out.append(
                (
                    ma if ma is not None else torch.zeros_like(like),
                    mb if mb is not None else torch.zeros_like(like),
                )
            )
    return out


def _needs(args, variant: str) -> float:
    """Rough seconds one measurement needs (skip it when less is left)."""
    if args.quick:
        return 5.0
    return 40.0 if "large" in variant else 15.0


def stage_speed_model(pairs: Pairs, args, precisions=("fp32", "bf16"), variants=None) -> dict:
    from _gpu_speed import agreement_summary, model_stages

    _ref_available()
    sz, results = args.sizes, {}
    for variant in variants or sz["variants"]:
        masks = {}
        for precision in precisions:

            def measure(variant=variant, precision=precision, masks=masks):
                rows = model_stages(pairs.get(variant), precision, sz["repeats"], sz["warmup"])
                for stage, row in rows.items():
                    if "masks" in row:
                        per_stage = masks.setdefault(stage, {})
                        compare_masks(row, per_stage, precision, lambda a, b: agreement_summary([(a, b)]))
                return rows

            guarded(results, f"{variant} / {precision}", measure, args.report, needs_s=_needs(args, variant))
    return stage_status(results)


def stage_speed_everything(pairs: Pairs, args, precisions=("fp32", "bf16")) -> dict:
    from _gpu_speed import discs_rgb, everything, matched_iou

    _ref_available()
    sz, results = args.sizes, {}
    h, w, n = sz["everything_image"]
    image = discs_rgb(h, w, n)
    for variant in sz["variants"]:
        masks = {}
        for precision in precisions:

            def measure(variant=variant, precision=precision, masks=masks):
                row = everything(
                    pairs.get(variant), image, sz["everything_points"], precision, sz["repeats"], sz["warmup"]
                )
                compare_masks(row, masks, precision, matched_iou, between_sides=False)
                return row

            guarded(
                results, f"{variant} / {precision}", measure, args.report, needs_s=2 * _needs(args, variant)
            )
    return stage_status(results)


def stage_speed_compile(pairs: Pairs, args) -> dict:
    """torch.compile of both image encoders: encode/click/step and 1-object propagation."""
    if args.device == "cpu" and args.quick and not args.compile:
        return {"_status": "skipped",
                "_reason": "CPU --quick: inductor's C++ compile takes minutes on a few cores (--compile forces it)"}  # fmt: skip
    first = args.sizes["variants"][:1]  # compiling costs a minute or more per model: the first variant only
    with pairs.get(first[0]).compiled_encoders():  # compiled once, for both measurements
        results = {
            "model": stage_speed_model(pairs, args, precisions=("compile",), variants=first),
            "propagation": stage_speed_propagation(
                pairs, args, precisions=("compile",), objects=(1,), variants=first
            ),
        }
    bad = [k for k, v in results.items() if v.get("_status") == "failed"]
    if bad:
        results["_status"], results["_reason"] = "failed", "failed: " + ", ".join(bad)
    return results


# ---------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes: the CPU smoke run")
    p.add_argument(
        "--out", type=Path, default=None, help="results folder (default: $OUT, else benchmarks/out/gpu_check)"
    )
    p.add_argument(
        "--budget", type=float, default=None, help="seconds for the whole run (default 420; 170 with --quick)"
    )
    p.add_argument(
        "--wheels", type=Path, default=ROOT / ".whl", help="folder of wheels to install from (default .whl)"
    )
    p.add_argument("--site", type=Path, default=Path(tempfile.gettempdir()) / "napari_sam2_gpu_site",
                   help="where missing packages are installed (added to sys.path and the tests' PYTHONPATH)")  # fmt: skip
    p.add_argument("--no-install", action="store_true", help="skip the install stage")
    p.add_argument("--compile", action="store_true", help="run the torch.compile stage on CPU --quick too")
    p.add_argument(
        "--stages",
        default=None,
        help="comma-separated subset of the stages (the others are recorded as skipped)",
    )
    p.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: 1 on the CPU, torch's on a GPU)"
    )
    p.add_argument(
        "--variants",
        default=None,
        help="comma-separated variants for the speed stages (default: sam2.1_hiera_tiny)",
    )
    p.add_argument("--prepare-wheels", type=Path, default=None, metavar="DIR",
                   help="only download/build the wheels the GPU machine lacks into DIR (run where pip reaches PyPI)")  # fmt: skip
    args = p.parse_args(argv)
    if args.budget is None:
        args.budget = 170.0 if args.quick else 420.0
    if args.out is None:
        args.out = (
            Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "benchmarks" / "out" / "gpu_check"
        )
    if args.stages:
        unknown = set(args.stages.split(",")) - set(STAGES)
        if unknown:
            p.error(f"unknown stages {sorted(unknown)}; known: {', '.join(STAGES)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.prepare_wheels:
        return prepare_wheels(args.prepare_wheels)
    args.sizes = sizes(args)
    if args.variants:
        args.sizes["variants"] = [v.strip() for v in args.variants.split(",") if v.strip()]
    report = args.report = Report(args.out, args, args.budget)
    report.data["sizes"] = args.sizes
    add_site(args.site)  # an earlier run's installs, if any
    wanted = set(args.stages.split(",")) if args.stages else set(STAGES)

    def stage(name: str, fn: Callable[[], dict], needs_s: float) -> dict:
        if name not in wanted:
            rec = {"status": "skipped", "reason": "not in --stages"}
            report.set(name, rec)
            return rec
        return run_stage(report, name, fn, needs_s)

    q = args.quick
    stage("install", lambda: stage_install(args), 5)
    env = stage("environment", lambda: stage_environment(args), 5)
    if env["status"] == "ok":
        import torch

        if args.threads is None and args.device == "cpu":
            args.threads = (
                1  # steady on a shared machine: two threads slow down many times when a neighbour runs
            )
        if args.threads:
            torch.set_num_threads(args.threads)
        report.data["torch_threads"] = torch.get_num_threads()
    stage(
        "tests_parity", lambda: stage_pytest("tests_parity", args, cap_s=0.35 * args.budget), 15 if q else 40
    )
    stage(
        "tests_propagation",
        lambda: stage_pytest("tests_propagation", args, cap_s=0.2 * args.budget),
        10 if q else 25,
    )
    case: dict[str, ApiCase] = {}

    def api(fn):
        def run():
            if "case" not in case:
                case["case"] = ApiCase(args)
            return fn(case["case"], args)

        return run

    stage("api_click", api(stage_api_click), 5 if q else 15)
    stage("api_propagate", api(stage_api_propagate), 8 if q else 20)
    stage("api_everything", api(stage_api_everything), 8 if q else 20)
    pairs = Pairs(args)
    stage("speed_propagation", lambda: stage_speed_propagation(pairs, args), 15 if q else 30)
    stage("speed_model", lambda: stage_speed_model(pairs, args), 15 if q else 30)
    stage("speed_everything", lambda: stage_speed_everything(pairs, args), 10 if q else 30)
    stage("speed_compile", lambda: stage_speed_compile(pairs, args), 5 if q else 120)
    report.data["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    report.write()
    statuses = {n: report.data["stages"][n]["status"] for n in STAGES}
    print(json.dumps(statuses))
    print(f"wrote {args.out / 'gpu_check.json'} and {args.out / 'gpu_check.md'} in {report.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
