"""The code style pyproject.toml sets ([tool.ruff]: lint rules and formatting), kept by the same test
command as everything else, so a change that breaks it fails CI instead of waiting for a reviewer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["src", "tests", "benchmarks"]

if os.environ.get("CI"):
    import ruff  # noqa: F401  (CI installs the testing extra, which pins ruff)
else:
    pytest.importorskip("ruff", reason="ruff comes with the testing extra (scripts/setup.sh)")


def _ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args, *PATHS], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_lint_rules_hold():
    done = _ruff("check", "--no-cache")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_code_is_formatted():
    done = _ruff("format", "--check", "--no-cache")
    assert done.returncode == 0, "run `ruff format src tests benchmarks`:\n" + done.stdout[-3000:]
