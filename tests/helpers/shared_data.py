"""The project's real test volumes (``../shared/data`` from the project root; see its README).

CI finds the folder there; a worktree deeper down finds it in an ancestor's ``shared/data``, and
``NAPARI_SAM2_SHARED_DATA`` names it anywhere else. Tests that need it skip, saying where it was looked
for, when it is absent; in CI (``CI`` set) they fail instead, so the real-data tests cannot vanish there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ENV_VAR = "NAPARI_SAM2_SHARED_DATA"
_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path | None:
    """The shared data folder, or None."""
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    for parent in _ROOT.parents:
        candidate = parent / "shared" / "data"
        if (candidate / "README.md").is_file():
            return candidate
    return None


def shared_file(*parts: str) -> Path:
    """A file of the shared data folder; skips the test (fails it in CI) when it is absent."""
    folder = shared_data_dir()
    missing = None
    if folder is None:
        missing = f"no shared/data folder above {_ROOT} (set {ENV_VAR})"
    elif not folder.joinpath(*parts).exists():
        missing = f"{folder.joinpath(*parts)} is absent"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing)
        pytest.skip(missing)
    return folder.joinpath(*parts)
