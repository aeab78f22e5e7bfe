"""CPU speed of the SAM2 family side by side: our EdgeTAM, the authors' EdgeTAM, our SAM2.1-tiny, Meta's.

Each implementation runs in its own worker process (the authors' EdgeTAM installs as a package named
``sam2``, like Meta's reference, so they cannot share a process), with random weights (speed does not
depend on their values) and the same thread count. The parent sends one stage at a time to one worker
while the others wait, rotating the order every round, so all four see the same machine load; ratios are
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
STAGES = ("encode", "click", "step")
IMPLS = {
    # name: (model, implementation, what)
    "ours_edgetam": ("edgetam", "ours", "our EdgeTAM"),
    "authors_edgetam": ("edgetam", "authors", "EdgeTAM, authors' code (edgetam-dimos 1.0.1)"),
    "ours_tiny": ("sam2.1_hiera_tiny", "ours", "our SAM2.1-tiny"),
    "meta_tiny": ("sam2.1_hiera_tiny", "meta", "SAM2.1-tiny, Meta's code (sam2 1.1.0)"),
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
    import family_oracle  # the authors' EdgeTAM, first on sys.path

    sys.path.insert(0, str(ORACLE))
    side = size // 16
    job = {
        "kind": "image",
        "config": "edgetam.yaml",
        "image_size": size,
        "overrides": {"memory_attention.layer.cross_attention.q_sizes": f"[{side},{side}]"},
    }
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = family_oracle._build({**job, "checkpoint": str(Path(tmp) / "edgetam.pt")})
    return RefStages(model, inputs)


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
    workers = [Worker(name, args) for name in IMPLS]
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

    ratios = {
        "ours_edgetam_vs_authors (time)": {s: paired("ours_edgetam", "authors_edgetam", s) for s in STAGES},
        "ours_tiny_vs_meta (time)": {s: paired("ours_tiny", "meta_tiny", s) for s in STAGES},
        "ours_edgetam_vs_ours_tiny (time)": {s: paired("ours_edgetam", "ours_tiny", s) for s in STAGES},
        "fps ours_edgetam / ours_tiny": paired_frame("ours_edgetam", "ours_tiny"),
        "fps ours_edgetam / authors_edgetam": paired_frame("ours_edgetam", "authors_edgetam"),
        "fps ours_tiny / meta_tiny": paired_frame("ours_tiny", "meta_tiny"),
    }
    return {"median_s": med, "fps": fps, "ratios": ratios}


def print_tables(summary: dict, rss: dict, args) -> None:
    med, fps = summary["median_s"], summary["fps"]
    print(f"\nS = {args.image_size}, {args.threads} torch threads, {args.rounds} rounds (medians)\n")
    print("| model | encode (s) | click (ms) | step (s) | propagation (frames/s) | peak RSS (MiB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, (_, _, what) in IMPLS.items():
        m = med[name]
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
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        impl, model, size, threads = args.worker
        worker_main(impl, model, int(size), int(threads))
        return
    if not (ORACLE / "sam2" / "configs" / "edgetam.yaml").is_file():
        sys.exit(f"the authors' EdgeTAM is not installed in {ORACLE}; run scripts/setup.sh")
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
