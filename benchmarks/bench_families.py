"""CPU speed of the SAM2 family side by side: our EdgeTAM and EfficientTAM and their authors' code, our
SAM2.1-tiny and Meta's.

Each implementation runs in its own worker process (the authors' EdgeTAM and EfficientTAM each install
as a package named ``sam2``, like Meta's reference, so they cannot share a process), with random weights (speed does not
depend on their values) and the same thread count. The parent sends one stage at a time to one worker
while the others wait, rotating the order every round, so all see the same machine load; ratios are
medians of the per-round ratios. Stages, as in ``bench_model.py``:

1. ``encode``: image encoder on one (1, 3, S, S) image;
2. ``click``: prompt encoder + mask decoder for one positive click, multimask;
3. ``step``: one memory-conditioned frame: memory attention over 7 spatial memories and 16 object
   pointers, decode (multimask, best mask), the frame's new memory.

Propagation speed is ``frames/s = 1 / (encode + step)``: what one object costs per frame. Peak RSS
is each worker's high-water mark after loading and running every stage.

Usage::

    .venv/bin/python benchmarks/bench_families.py                # S = 1024, 3 rounds
    .venv/bin/python benchmarks/bench_families.py --quick        # smoke run: S = 256, 1 round
    .venv/bin/python benchmarks/bench_families.py --json out.json
    .venv/bin/python benchmarks/bench_families.py --only ours_tiny ours_efficienttam_ti_1 authors_efficienttam_ti_1

EfficientTAM is measured as ``efficienttam_ti_1`` and ``efficienttam_s_1`` (the efficient memory
cross-attention, which the step's seven memories exercise) and ``efficienttam_ti`` (full attention).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORACLE = Path(os.environ.get("NAPARI_SAM2_ORACLE_EDGETAM", ROOT / ".oracles" / "edgetam"))
ORACLE_EFFICIENTTAM = Path(
    os.environ.get("NAPARI_SAM2_ORACLE_EFFICIENTTAM", ROOT / ".oracles" / "efficienttam")
)
STAGES = ("encode", "click", "step")
_ETAM = "EfficientTAM-{}, authors' code (efficient-track-anything 1.0)"
IMPLS = {
    # name: (model, implementation, what)
    "ours_edgetam": ("edgetam", "ours", "our EdgeTAM"),
    "authors_edgetam": ("edgetam", "authors", "EdgeTAM, authors' code (edgetam-dimos 1.0.1)"),
    "ours_efficienttam_ti_1": ("efficienttam_ti_1", "ours", "our EfficientTAM-Ti (_1, pooled memory)"),
    "authors_efficienttam_ti_1": ("efficienttam_ti_1", "authors", _ETAM.format("Ti (_1)")),
    "ours_efficienttam_s_1": ("efficienttam_s_1", "ours", "our EfficientTAM-S (_1, pooled memory)"),
    "authors_efficienttam_s_1": ("efficienttam_s_1", "authors", _ETAM.format("S (_1)")),
    "ours_efficienttam_ti": ("efficienttam_ti", "ours", "our EfficientTAM-Ti (full memory attention)"),
    "authors_efficienttam_ti": ("efficienttam_ti", "authors", _ETAM.format("Ti")),
    "ours_tiny": ("sam2.1_hiera_tiny", "ours", "our SAM2.1-tiny"),
    "meta_tiny": ("sam2.1_hiera_tiny", "meta", "SAM2.1-tiny, Meta's code (sam2 1.1.0)"),
}
# the authors' EfficientTAM memory cross-attention class for each of our variants
_ETAM_SPEC = {
    "efficienttam_ti": {"embed_dim": 192, "num_heads": 3, "cross_attention": "RoPEAttention"},
    "efficienttam_ti_1": {"embed_dim": 192, "num_heads": 3, "cross_attention": "EfficientRoPEAttention1"},
    "efficienttam_s_1": {"embed_dim": 384, "num_heads": 6, "cross_attention": "EfficientRoPEAttention1"},
}


# ---------------------------------------------------------------------------------------------- worker
def _build_worker_stages(impl: str, model_name: str, size: int):
    """Stage runner for one implementation (in the worker process)."""
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    sys.path.insert(0, str(ROOT / "tests"))
    from bench_model import OursStages, RefStages, make_inputs

    torch.manual_seed(0)
    inputs = make_inputs(size, torch.device("cpu"))
    if impl == "ours":
        from dataclasses import replace

        from napari_sam2.model import Sam2Model, get_config

        model = Sam2Model(replace(get_config(model_name), image_size=size)).eval()
        return OursStages(model, inputs)
    if impl == "meta":
        from reference import build_reference

        return RefStages(build_reference(model_name, image_size=size, seed=0), inputs)
    import family_oracle  # the authors' code, first on sys.path

    if model_name == "edgetam":
        sys.path.insert(0, str(ORACLE))
        side = size // 16
        job = {
            "kind": "image",
            "config": "edgetam.yaml",
            "image_size": size,
            "overrides": {"memory_attention.layer.cross_attention.q_sizes": f"[{side},{side}]"},
        }
    else:
        sys.path.insert(0, str(ORACLE_EFFICIENTTAM))
        job = {"kind": "image", "efficienttam": _ETAM_SPEC[model_name], "image_size": size}
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = family_oracle._build({**job, "checkpoint": str(Path(tmp) / "model.pt")})
    if model_name == "edgetam":
        return RefStages(model, inputs)
    return _sam20_ref_stages()(model, inputs)


def _sam20_ref_stages():
    """:class:`RefStages` for SAM 2.0-era code (EfficientTAM's): its ``_encode_new_memory`` takes no
    object score."""
    from bench_model import RefStages

    class Sam20RefStages(RefStages):
        def prepare_memories(self):
            m = self.model
            feats, _, sizes = self.vision
            points = {"point_coords": self.inputs["coords"], "point_labels": self.inputs["labels"]}
            *_, high_best, obj_ptr, score = m._forward_sam_heads(
                self.embed, point_inputs=points, high_res_features=self.high_res, multimask_output=True
            )
            mem, mem_pos = m._encode_new_memory(feats, sizes, high_best, is_mask_from_pts=False)
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

    return Sam20RefStages


def worker_main(impl: str, model_name: str, size: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    stages = _build_worker_stages(impl, model_name, size)
    print("READY", flush=True)
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "quit":
            break
        if cmd == "rss":
            hwm = next(
                (
                    ln.split()[1]
                    for ln in Path("/proc/self/status").read_text().splitlines()
                    if ln.startswith("VmHWM")
                ),
                "0",
            )
            print(f"RSS {int(hwm) / 1024:.1f}", flush=True)
            continue
        with torch.inference_mode():
            start = time.perf_counter()
            getattr(stages, cmd)()
            print(f"TIME {time.perf_counter() - start:.6f}", flush=True)


# ---------------------------------------------------------------------------------------------- parent
class Worker:
    def __init__(self, name: str, args) -> None:
        model, impl, _ = IMPLS[name]
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", impl, model, str(args.image_size), str(args.threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "src")},  # nothing else may shadow ``sam2``
        )
        self._expect("READY")

    def _expect(self, word: str) -> str:
        line = self.proc.stdout.readline()
        while line and not line.startswith(word):  # skip the reference's chatter
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.name} exited (code {self.proc.wait()})")
        return line[len(word) :].strip()

    def ask(self, cmd: str, word: str = "TIME") -> float:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return float(self._expect(word))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        self.proc.wait(timeout=60)


def run(args) -> dict:
    workers = [Worker(name, args) for name in args.only]
    times: dict[str, dict[str, list[float]]] = {w.name: {s: [] for s in STAGES} for w in workers}
    try:
        for w in workers:  # warm-up; the step needs memories from a click on the frame
            for stage in STAGES:
                if stage == "step":
                    w.ask("prepare_memories")
                w.ask(stage)
        for r in range(args.rounds):
            order = workers[r % len(workers) :] + workers[: r % len(workers)]
            for stage in STAGES:
                repeats = 5 if stage == "click" else 1  # clicks are milliseconds: more samples
                for _ in range(repeats):
                    for w in order:
                        times[w.name][stage].append(w.ask(stage))
            print(f"round {r + 1}/{args.rounds} done", flush=True)
        rss = {w.name: w.ask("rss", "RSS") for w in workers}
    finally:
        for w in workers:
            w.close()
    return {"times": times, "rss_mib": rss}


def summarise(result: dict) -> dict:
    t = result["times"]
    med = {n: {s: statistics.median(v) for s, v in st.items()} for n, st in t.items()}
    fps = {n: 1.0 / (m["encode"] + m["step"]) for n, m in med.items()}

    def paired(a: str, b: str, stage: str) -> float:
        return statistics.median(x / y for x, y in zip(t[a][stage], t[b][stage], strict=True))

    def paired_frame(a: str, b: str) -> float:
        fa = [e + s for e, s in zip(t[a]["encode"], t[a]["step"], strict=True)]
        fb = [e + s for e, s in zip(t[b]["encode"], t[b]["step"], strict=True)]
        return statistics.median(y / x for x, y in zip(fa, fb, strict=True))  # fps ratio a/b

    ratios: dict = {}
    ours = [n for n in t if n.startswith("ours_")]
    for a in ours:  # ours vs its authors' (or Meta's) code
        b = "meta_tiny" if a == "ours_tiny" else a.replace("ours_", "authors_")
        if b in t:
            ratios[f"{a}_vs_{b.split('_')[0]} (time)"] = {s: paired(a, b, s) for s in STAGES}
    for a in ours:  # each family vs our SAM2.1-tiny
        if a != "ours_tiny" and "ours_tiny" in t:
            ratios[f"{a}_vs_ours_tiny (time)"] = {s: paired(a, "ours_tiny", s) for s in STAGES}
    for a in ours:
        if a != "ours_tiny" and "ours_tiny" in t:
            ratios[f"fps {a} / ours_tiny"] = paired_frame(a, "ours_tiny")
    for a in ours:
        b = "meta_tiny" if a == "ours_tiny" else a.replace("ours_", "authors_")
        if b in t:
            ratios[f"fps {a} / {b}"] = paired_frame(a, b)
    return {"median_s": med, "fps": fps, "ratios": ratios}


def print_tables(summary: dict, rss: dict, args) -> None:
    med, fps = summary["median_s"], summary["fps"]
    print(f"\nS = {args.image_size}, {args.threads} torch threads, {args.rounds} rounds (medians)\n")
    print("| model | encode (s) | click (ms) | step (s) | propagation (frames/s) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in args.only:
        what, m = IMPLS[name][2], med[name]
        print(
            f"| {what} | {m['encode']:.3f} | {1000 * m['click']:.1f} | {m['step']:.3f} | "
            f"{fps[name]:.2f} | {rss[name]:.0f} |"
        )
    print("\n| ratio (median of paired rounds) | encode | click | step |")
    print("|---|---:|---:|---:|")
    for key, value in summary["ratios"].items():
        if isinstance(value, dict):
            print(f"| {key} | {value['encode']:.3f} | {value['click']:.3f} | {value['step']:.3f} |")
    for key, value in summary["ratios"].items():
        if not isinstance(value, dict):
            print(f"{key}: {value:.2f}x")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--image-size", type=int, default=None, help="model input S (default 1024; 256 with --quick)"
    )
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 3; 1 with --quick)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per worker (default 2)")
    p.add_argument("--quick", action="store_true", help="smoke run: S = 256, 1 round")
    p.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the results as JSON")
    p.add_argument(
        "--only",
        nargs="+",
        choices=list(IMPLS),
        default=list(IMPLS),
        metavar="IMPL",
        help=f"implementations to run (default all: {', '.join(IMPLS)})",
    )
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        impl, model, size, threads = args.worker
        worker_main(impl, model, int(size), int(threads))
        return
    if (
        any(n == "authors_edgetam" for n in args.only)
        and not (ORACLE / "sam2" / "configs" / "edgetam.yaml").is_file()
    ):
        sys.exit(f"the authors' EdgeTAM is not installed in {ORACLE}; run scripts/setup.sh")
    vitdet = ORACLE_EFFICIENTTAM / "sam2" / "modeling" / "backbones" / "vitdet.py"
    if any(n.startswith("authors_efficienttam") for n in args.only) and not vitdet.is_file():
        sys.exit(f"the authors' EfficientTAM is not installed in {ORACLE_EFFICIENTTAM}; run scripts/setup.sh")
    args.image_size = args.image_size or (256 if args.quick else 1024)
    args.rounds = args.rounds or (1 if args.quick else 3)
    start = time.perf_counter()
    result = run(args)
    summary = summarise(result)
    print_tables(summary, result["rss_mib"], args)
    total = time.perf_counter() - start
    with contextlib.suppress(OSError):
        load = Path("/proc/loadavg").read_text().split()[:3]
    print(f"\ntotal {total:.0f} s; load average at the end {' '.join(load)}")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), **result, **summary}, indent=2, default=str))


if __name__ == "__main__":
    main()
