"""benchmarks/gpu_check.py, the one command prepared for a GPU machine, runs on the CPU: its JSON
names every stage with numbers or a recorded reason, and its markdown table is written.

A small budget and a few stages keep this under a minute on two shared cores; the stages left
out must say so. (The whole quick run, every stage, is in docs/performance.md.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_reference

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
RUN = ("environment", "install", "api_click", "speed_model")

pytestmark = pytest.mark.slow


def _numbers(value) -> list[float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, dict):
        return [n for v in value.values() for n in _numbers(v)]
    if isinstance(value, list):
        return [n for v in value for n in _numbers(v)]
    return []


def test_quick_cpu_run_records_every_stage(tmp_path):
    require_reference()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(SCRIPT), "--device", "cpu", "--quick", "--budget", "40", "--threads", "1",
           "--no-install", "--stages", ",".join(RUN), "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]

    data = json.loads((tmp_path / "gpu_check.json").read_text())
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        from gpu_check import STAGES
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert list(data["stages"]) == list(STAGES)
    for name, rec in data["stages"].items():
        status = rec["status"]
        assert status in ("ok", "skipped"), (
            f"{name}: {status}: {rec.get('reason')}\n{rec.get('traceback', '')}"
        )
        if status == "skipped":
            assert rec["reason"], name  # an explicit reason: --stages, --no-install or the budget
            if name not in RUN:
                assert rec["reason"] == "not in --stages"
        else:
            assert isinstance(rec["seconds"], float) and rec["results"], name
            assert _numbers(rec["results"]) or name == "install", name
            for key, row in rec["results"].items():  # measurements inside a stage: numbers or a reason
                if isinstance(row, dict) and "status" in row:
                    assert row["status"] in ("ok", "skipped"), f"{name}/{key}: {row.get('reason')}"
                    assert _numbers(row) if row["status"] == "ok" else row["reason"], f"{name}/{key}"
    assert data["stages"]["install"]["reason"] == "--no-install"
    assert data["stages"]["environment"]["status"] == "ok"

    md = (tmp_path / "gpu_check.md").read_text()
    assert "| stage | status | seconds | note |" in md
    for name in STAGES:
        assert f"| {name} | {data['stages'][name]['status']} |" in md
    if data["stages"]["speed_model"]["status"] == "ok":
        assert "| speed_model | sam2.1_hiera_tiny / fp32 / encode |" in md
        assert "## Masks: bfloat16 autocast against float32" in md
