"""Shared fixtures: seeded models with identical random weights in ours and in the reference."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_configure(config):
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def require_reference():
    """Import the reference package; in CI its absence is an error, not a skip."""
    if os.environ.get("CI"):
        import sam2  # noqa: F401  (fails loudly: CI must install it)
    else:
        pytest.importorskip("sam2", reason="the reference sam2==1.1.0 is installed by scripts/setup.sh")


@pytest.fixture(autouse=True)
def _no_grad():
    with torch.inference_mode():
        yield
