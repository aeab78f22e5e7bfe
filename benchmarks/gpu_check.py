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
   bfloat16 (IoU, differing pixels). See benchmarks/_gpu_speed.py.

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
import contextlib
import datetime
import importlib
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "benchmarks", ROOT / "tests", ROOT / "src"):  # the working tree's code first
    sys.path.insert(0, str(_p))
os.environ.setdefault("TQDM_DISABLE", "1")  # the reference's progress bars

STAGES = (
    "environment",
    "install",
    "tests_parity",
    "tests_propagation",
    "api_click",
    "api_propagate",
    "api_everything",
    "speed_propagation",
    "speed_model",
    "speed_everything",
    "speed_compile",
)
# (distribution, import name, version that --prepare-wheels carries). Versions: those the CPU test
# environment runs (scripts/setup.sh). None: on the GPU machine's image already (KINDS.md), so not
# carried; installed unpinned from the index if a machine lacks it.
REQUIREMENTS = (
    ("zarr", "zarr", "3.1.6"),
    ("numcodecs", "numcodecs", "0.16.6"),
    ("google-crc32c", "google_crc32c", "1.9.0"),
    ("donfig", "donfig", "0.8.1.post1"),
    ("hydra-core", "hydra", "1.3.8"),
    ("omegaconf", "omegaconf", "2.3.1"),
    ("antlr4-python3-runtime", "antlr4", "4.9.3"),
    ("iopath", "iopath", "0.1.10"),
    ("sam2", "sam2", "1.1.0"),
    ("portalocker", "portalocker", None),
    ("tifffile", "tifffile", None),
    ("scikit-image", "skimage", None),
    ("scipy", "scipy", None),
    ("tqdm", "tqdm", None),
    ("pillow", "PIL", None),
    ("pytest", "pytest", None),
    ("pytest-timeout", "pytest_timeout", None),  # pyproject's `timeout` option under --strict-config
)
WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
DEVICE_PYTHON = "3.12"  # the GPU machine's python3 (/work/.library/device/KINDS.md)


class BudgetExceeded(BaseException):
    """The watchdog fired: the stage ran past the global time budget."""


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


# ---------------------------------------------------------------------------- report
class Report:
    """Stage results, written as JSON and markdown after every change."""

    def __init__(self, out: Path, args, budget_s: float) -> None:
        self.out, self.start, self.budget_s = out, time.monotonic(), budget_s
        self.data: dict[str, Any] = {
            "schema": 1,
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "device": args.device,
            "quick": args.quick,
            "budget_s": budget_s,
            "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "stages": {name: {"status": "pending"} for name in STAGES},
        }

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def set(self, name: str, record: dict) -> None:
        self.data["stages"][name] = record
        self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(self.elapsed(), 1)
        self.out.mkdir(parents=True, exist_ok=True)
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(self.data, indent=2, default=_json_default))
        tmp.replace(self.out / "gpu_check.json")
        (self.out / "gpu_check.md").write_text(render_markdown(self.data))


def _json_default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def run_stage(report: Report, name: str, fn: Callable[[], dict], needs_s: float) -> dict:
    """Run one stage unless the budget is spent; record ok / failed / skipped with the reason."""
    left = report.left()
    if left < needs_s:
        rec = {
            "status": "skipped",
            "reason": f"time budget: {left:.0f} s left, the stage needs about {needs_s:.0f} s",
        }
        report.set(name, rec)
        print(f"[{name}] skipped: {rec['reason']}", flush=True)
        return rec
    print(f"[{name}] start ({left:.0f} s of budget left)", flush=True)
    t0 = time.monotonic()
    try:
        with watchdog(left + min(30.0, 0.1 * report.budget_s)):
            results = fn()
        status = results.pop("_status", "ok")
        rec = {"status": status, "seconds": round(time.monotonic() - t0, 2), "results": results}
        if "_reason" in results:
            rec["reason"] = results.pop("_reason")
    except BudgetExceeded as exc:  # cut short by the budget: not a finding about the code
        rec = {
            "status": "skipped",
            "seconds": round(time.monotonic() - t0, 2),
            "reason": f"time budget: {exc}",
        }
    except Exception as exc:  # a failing stage is a finding: record it and go on
        rec = {
            "status": "failed",
            "seconds": round(time.monotonic() - t0, 2),
            "reason": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-4000:],
        }
    report.set(name, rec)
    print(
        f"[{name}] {rec['status']} in {rec['seconds']:.1f} s"
        + (f": {rec.get('reason')}" if rec.get("reason") else ""),
        flush=True,
    )
    return rec


@contextlib.contextmanager
def watchdog(seconds: float):
    """Raise BudgetExceeded in this (main) thread after ``seconds`` (POSIX; a no-op elsewhere)."""
    if not hasattr(signal, "SIGALRM"):
        yield
        return

    def fire(signum, frame):
        raise BudgetExceeded(f"the stage ran past the time budget (watchdog at {seconds:.0f} s)")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1.0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def guarded(results: dict, key: str, fn: Callable[[], dict], report: Report, needs_s: float = 0.0) -> None:
    """One measurement inside a stage: results[key] = its numbers, or a recorded failure or skip."""
    left = report.left()
    if left < needs_s:
        results[key] = {
            "status": "skipped",
            "reason": f"time budget: {left:.0f} s left, needs about {needs_s:.0f} s",
        }
        return
    t0 = time.monotonic()
    try:
        row = fn()
        errors = _errors(row)
        results[key] = {
            "status": "failed" if errors else "ok",
            **row,
            "seconds": round(time.monotonic() - t0, 2),
        }
        if errors:
            results[key]["reason"] = "; ".join(errors)[:1000]
    except Exception as exc:
        results[key] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                        "traceback": traceback.format_exc()[-2000:]}  # fmt: skip
    print(
        f"    {key}: {results[key]['status']}"
        + (f" ({results[key].get('reason')})" if results[key]["status"] != "ok" else ""),
        flush=True,
    )


def _errors(row: dict, prefix: str = "") -> list[str]:
    """Every side's error recorded in a measurement row or in its sub-rows (model stages)."""
    out = [f"{prefix}{side}: {msg}" for side, msg in row.get("errors", {}).items()]
    for k, v in row.items():
        if isinstance(v, dict) and k != "errors":
            out += _errors(v, f"{prefix}{k}/")
    return out


# ---------------------------------------------------------------------------- environment and install
def stage_environment(args) -> dict:
    import torch

    info = {
        "python": platform.python_version(),
        "executable": sys.executable,
        "platform": platform.platform(),
        "nproc": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
        "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32,
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info |= {
            "gpu": props.name,
            "gpu_memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "cuda": torch.version.cuda,
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
    with contextlib.suppress(Exception):
        info["git_commit"] = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"--device {args.device} but torch {torch.__version__} sees no CUDA device")
    return info


def missing_requirements() -> list[tuple[str, str, str]]:
    importlib.invalidate_caches()
    return [r for r in REQUIREMENTS if importlib.util.find_spec(r[1]) is None]


def _norm(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def stage_install(args) -> dict:
    missing = missing_requirements()
    result: dict[str, Any] = {
        "missing_before": [m[0] for m in missing],
        "installed": [],
        "site": str(args.site),
    }
    if args.no_install:
        result["_status"], result["_reason"] = "skipped", "--no-install"
        return result
    if missing:
        args.site.mkdir(parents=True, exist_ok=True)
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--disable-pip-version-check",
               "--target", str(args.site), "--upgrade"]  # fmt: skip
        if args.wheels and args.wheels.is_dir():
            files = {}
            for whl in args.wheels.glob("*.whl"):
                files[_norm(whl.name.split("-")[0])] = whl
            chosen = [files[_norm(d)] for d, _, _ in missing if _norm(d) in files]
            result["not_in_wheels"] = [d for d, _, _ in missing if _norm(d) not in files]
            cmd = [*pip, "--no-index", *map(str, chosen)] if chosen else None
            result["source"] = str(args.wheels)
        else:
            chosen = [d if v is None else f"{d}=={v}" for d, _, v in missing]
            cmd = [*pip, "--retries", "0", "--timeout", "15", *chosen]
            result["source"] = "package index"
        if cmd:
            proc = subprocess.run(
                cmd, capture_output=True, text=True, timeout=max(30, min(300, args.report.left()))
            )
            result["pip_exit"] = proc.returncode
            if proc.returncode:
                result["pip_output"] = (proc.stdout + proc.stderr)[-2000:]
        add_site(args.site)
        result["installed"] = [m[0] for m in missing if importlib.util.find_spec(m[1]) is not None]
    still = missing_requirements()
    result["missing_after"] = [m[0] for m in still]
    if still:
        result["_status"] = "failed"
        result["_reason"] = "still missing: " + ", ".join(result["missing_after"])
    return result


def add_site(site: Path) -> None:
    if site.is_dir() and str(site) not in sys.path:
        sys.path.insert(3, str(site))  # after the working tree's folders
        importlib.invalidate_caches()


def prepare_wheels(dest: Path) -> int:
    """Download (or build, for the sdist-only ones) the pinned REQUIREMENTS' wheels for the GPU machine."""
    dest.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    binary, built = [], []
    for dist, _, version in REQUIREMENTS:
        if version is None:
            continue
        spec = f"{dist}=={version}"
        cmd = [*pip, "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", DEVICE_PYTHON,
               "--implementation", "cp", *(a for p in WHEEL_PLATFORMS for a in ("--platform", p)), "-d", str(dest), spec]  # fmt: skip
        if subprocess.run(cmd, capture_output=True, text=True).returncode == 0:
            binary.append(spec)
            continue
        # no wheel on the index: build one here (pure Python; no CUDA extension for sam2)
        env = {**os.environ, "SAM2_BUILD_CUDA": "0"}
        cmd = [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dest), spec]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode:
            print(f"could not get a wheel for {spec}:\n{proc.stderr[-2000:]}", file=sys.stderr)
            return 1
        built.append(spec)
    size = sum(f.stat().st_size for f in dest.glob("*.whl")) / 2**20
    print(
        f"{dest}: {len(binary)} downloaded, {len(built)} built ({', '.join(built) or 'none'}); {size:.1f} MiB"
    )
    return 0


# ---------------------------------------------------------------------------- pytest on the device
TEST_SELECTION = {
    # full: every parity and propagation test, slow ones included; quick: one of each kind
    "tests_parity": (
        ["tests/test_parity_image.py", "tests/test_parity_video.py"],
        ["tests/test_parity_image.py::test_trunk_neck_and_embeddings[sam2_small-160]",
         "tests/test_parity_video.py::test_memory_encoder_and_memory_attention_modules"],
    ),
    "tests_propagation": (
        ["tests/test_propagation.py", "tests/test_propagation_quality.py"],
        ["tests/test_propagation.py::test_single_keyframe_forward_run_equals_sam2_single_pass",
         "tests/test_propagation.py::test_middle_keyframe_runs_both_ways"],
    ),
}  # fmt: skip


def stage_pytest(name: str, args, cap_s: float) -> dict:
    full, quick = TEST_SELECTION[name]
    targets = quick if args.quick else full
    timeout = max(10.0, min(cap_s, args.report.left() - 5))
    env = dict(os.environ)
    env["NAPARI_SAM2_TEST_DEVICE"] = args.device
    paths = [str(ROOT / "src"), *([str(args.site)] if args.site.is_dir() else []), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", *targets, "-v", "-p", "no:cacheprovider", f"--junitxml={xml}",
               "-o", "faulthandler_timeout=0"]  # fmt: skip
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)  # fmt: skip
        try:
            out, _ = proc.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            timed_out = True
        except BaseException:  # the watchdog: leave no pytest running behind
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        result = {"device": args.device, "targets": targets, "exit": proc.returncode, "timeout_s": round(timeout),
                  "timed_out": timed_out, "output_tail": out[-3000:]}  # fmt: skip
        result |= junit_counts(xml) if xml.exists() else verbose_counts(out)
    if timed_out and timeout < cap_s:
        result["_status"] = "skipped"
        result["_reason"] = f"time budget: pytest stopped after {timeout:.0f} s; counts so far"
    elif timed_out:
        result["_status"] = "failed"
        result["_reason"] = f"pytest ran past its {cap_s:.0f} s share of the budget; counts so far"
    elif result["failed"] or result["errors"] or proc.returncode not in (0, 5):
        result["_status"] = "failed"
        result["_reason"] = f"{result['failed']} failed, {result['errors']} errors of {result['tests']}"
    return result


def junit_counts(xml: Path) -> dict:
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    failures = []
    for case in suite.iter("testcase"):
        for kind in ("failure", "error"):
            node = case.find(kind)
            if node is not None:
                msg = (node.get("message") or "").splitlines()[0][:300] if node.get("message") else ""
                failures.append(f"{case.get('classname')}::{case.get('name')} ({kind}): {msg}")
    tests, failed, errors, skipped = (
        int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")
    )
    return {"tests": tests, "passed": tests - failed - errors - skipped, "failed": failed, "errors": errors,
            "skipped": skipped, "pytest_seconds": float(suite.get("time", 0.0)), "failures": failures}  # fmt: skip


def verbose_counts(out: str) -> dict:
    """Counts from ``pytest -v`` lines when it was stopped before writing its report."""
    counts = dict.fromkeys(("PASSED", "FAILED", "ERROR", "SKIPPED"), 0)
    failures = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "::" in parts[0] and parts[1] in counts:
            counts[parts[1]] += 1
            if parts[1] in ("FAILED", "ERROR"):
                failures.append(parts[0])
    done = sum(counts.values())
    return {"tests": done, "passed": counts["PASSED"], "failed": counts["FAILED"], "errors": counts["ERROR"],
            "skipped": counts["SKIPPED"], "failures": failures}  # fmt: skip


# ---------------------------------------------------------------------------- the public API end to end
class ApiCase:
    """The demo model on the device and on the CPU, a generated nuclei stack and one click per nucleus."""

    def __init__(self, args) -> None:
        import numpy as np

        from napari_sam2 import Prompt, load_model
        from napari_sam2.engine import synthetic
        from napari_sam2.engine.evaluate import click_point

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
    return _stage_status(results)


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
    return _stage_status(results)


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
    return _stage_status(results)


def _stage_status(results: dict) -> dict:
    bad = [k for k, v in results.items() if isinstance(v, dict) and v.get("status") == "failed"]
    if bad:
        results["_status"] = "failed"
        results["_reason"] = "failed: " + ", ".join(bad)
    return results


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
    return _stage_status(results)


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
    return _stage_status(results)


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
    return _stage_status(results)


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


# ---------------------------------------------------------------------------- markdown
def _f(v, fmt=".3f") -> str:
    return "n/a" if v is None else format(v, fmt)


def render_markdown(data: dict) -> str:
    env = data["stages"].get("environment", {}).get("results", {})
    lines = [
        "# napari-sam2 GPU check",
        "",
        f"- device: `{data['device']}`{' (' + env['gpu'] + ')' if env.get('gpu') else ''}; quick: {data['quick']}",
        f"- torch {env.get('torch', '?')}, python {env.get('python', '?')}, {env.get('nproc', '?')} CPUs; "
        f"started {data['started']}; {data.get('elapsed_s', 0):.0f} s of a {data['budget_s']:.0f} s budget",
        f"- command: `{' '.join(data['command'])}`",
        "",
        "## Stages",
        "",
        "| stage | status | seconds | note |",
        "|---|---|---:|---|",
    ]
    for name in STAGES:
        rec = data["stages"].get(name, {})
        note = rec.get("reason", "")
        res = rec.get("results", {})
        if name.startswith("tests_") and "tests" in res:
            note = (
                f"{res['passed']} passed, {res['failed']} failed, {res['errors']} errors, {res['skipped']} skipped"
                + (f"; {note}" if note else "")
            )
        lines.append(
            f"| {name} | {rec.get('status')} | {_f(rec.get('seconds'), '.1f')} | {note.replace('|', '/')[:200]} |"
        )
    lines += _speed_tables(data)
    lines += _api_table(data)
    lines += _failures(data)
    return "\n".join(lines) + "\n"


def _speed_rows(data: dict):
    """(stage label, key, row) for every speed measurement with at least one side timed."""
    st = data["stages"]
    for name in ("speed_propagation", "speed_model", "speed_everything", "speed_compile"):
        res = st.get(name, {}).get("results", {})
        groups = [(name, res)]
        if name == "speed_compile":
            groups = [(f"{name}/{k}", v) for k, v in res.items() if isinstance(v, dict)]
        for label, group in groups:
            for key, row in group.items():
                if not isinstance(row, dict) or row.get("status") not in ("ok", "failed"):
                    continue
                subs = (
                    [s for s in ("encode", "click", "step") if s in row]
                    if label.endswith("model")
                    else [None]
                )
                for sub in subs:
                    r = row if sub is None else row[sub]
                    if r.get("ours_s") or r.get("ref_s"):
                        yield label, key if sub is None else f"{key} / {sub}", r


def _speed_tables(data: dict) -> list[str]:
    kind = "CUDA max_memory_allocated" if data["device"].startswith("cuda") else "resident set (VmHWM)"
    lines = ["", "## Ours vs the reference (same weights, same inputs)", "",
             "Times are medians; speed-up = ref time / ours time (> 1: ours faster); propagation in frames/s. "
             f"Memory: {kind} at its peak during one call, less what was held before it (both models' weights "
             "excluded), MiB. A side that failed shows its error instead of a time.",
             "", "| stage | variant / case / precision | ours | ref | speed-up | ours +MiB | ref +MiB | ours vs ref masks |",
             "|---|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    eq_lines = ["", "## Masks: bfloat16 autocast against float32", "",
                "| stage | variant / case / precision | ours IoU mean (min) | ours differing px | ref IoU mean (min) | ref differing px |",
                "|---|---|---|---:|---|---:|"]  # fmt: skip
    for label, key, row in _speed_rows(data):
        errors = row.get("errors", {})
        cells = []
        for side in ("ours", "ref"):
            if side in errors:
                cells.append("FAILED")
            elif "ours_fps" in row:
                cells.append(f"{_f(row.get(side + '_fps'), '.2f')} fr/s")
            else:
                cells.append(f"{_f(row[side + '_s'] and row[side + '_s'] * 1e3, '.1f')} ms")
        vs = row.get("ours_vs_ref")
        if vs and vs.get("masks"):
            same = f"IoU {vs['iou_mean']:.4f} (min {vs['iou_min']:.4f}), {vs['differing_fraction']:.2e} px differ"
        elif "ours_equal_ref" in row:
            same = f"{row['ours_masks']} vs {row['ref_masks']} masks, identical: {row['ours_equal_ref']}"
        else:
            same = "; ".join(f"{k}: {v}" for k, v in errors.items())[:200].replace("|", "/") or "n/a"
        speedup = _f(row.get("speedup"), ".2f") + ("x" if row.get("speedup") else "")
        lines.append(f"| {label} | {key} | {cells[0]} | {cells[1]} | {speedup} | {_f(row.get('ours_extra_mib'), '.0f')} | "
                     f"{_f(row.get('ref_extra_mib'), '.0f')} | {same} |")  # fmt: skip
        o, r = row.get("ours_vs_ours_fp32"), row.get("ref_vs_ref_fp32")
        if o or r:
            o, r = o or {}, r or {}
            eq_lines.append(f"| {label} | {key} | {_f(o.get('iou_mean'), '.4f')} ({_f(o.get('iou_min'), '.4f')}) | "
                            f"{o.get('differing_px', 'n/a')} | {_f(r.get('iou_mean'), '.4f')} ({_f(r.get('iou_min'), '.4f')}) | "
                            f"{r.get('differing_px', 'n/a')} |")  # fmt: skip
    return lines + eq_lines


def _api_table(data: dict) -> list[str]:
    lines = [
        "",
        "## Public API with the demo model",
        "",
        "| stage | measurement | figures |",
        "|---|---|---|",
    ]
    for name in ("api_click", "api_propagate", "api_everything"):
        for key, row in data["stages"].get(name, {}).get("results", {}).items():
            if not isinstance(row, dict):
                continue
            figures = ", ".join(f"{k} {_f(v, '.4g') if isinstance(v, float) else v}" for k, v in row.items()
                                if k not in ("traceback",) and not isinstance(v, (dict, list)))  # fmt: skip
            lines.append(f"| {name} | {key} | {figures.replace('|', '/')[:300]} |")
    return lines


def _failures(data: dict) -> list[str]:
    lines = []
    for name in STAGES:
        res = data["stages"].get(name, {}).get("results", {})
        for f in res.get("failures", [])[:20]:
            lines.append(f"- {name}: {f}")
    return ["", "## Failing tests", "", *lines] if lines else []


# ---------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (CPU smoke run: ~2-3 min on 2 cores)")
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
