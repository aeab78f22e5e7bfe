"""The environment, installing what is missing and pytest on the device, for benchmarks/gpu_check.py."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import platform
import signal
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

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
        ["tests/test_propagation.py", "tests/test_propagation_quality.py", "tests/test_device_flow.py"],
        ["tests/test_propagation.py::test_single_keyframe_forward_run_equals_sam2_single_pass",
         "tests/test_propagation.py::test_middle_keyframe_runs_both_ways",
         "tests/test_device_flow.py::test_real_device_click_and_propagation"],
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
