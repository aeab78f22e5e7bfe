"""The code blocks of docs/api.md run, in order, as written (with a stand-in for the demo model)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from napari_sam2.engine import models
from napari_sam2.model import Sam2Model
from napari_sam2.model.checkpoint import save_checkpoint
from napari_sam2.model.config import DEMO_CONFIG

DOC = Path(__file__).resolve().parent.parent / "docs" / "api.md"


def python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_api_md_blocks_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks(DOC.read_text())
    assert len(blocks) >= 6
    torch.manual_seed(0)
    demo = save_checkpoint(Sam2Model(DEMO_CONFIG), tmp_path / "demo" / "demo_sam2.pt")
    monkeypatch.setattr(models, "DEMO_FILE", demo)  # the real demo model is not shipped yet
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    namespace: dict = {"__name__": "docs_api"}
    with torch.inference_mode(False):
        for i, block in enumerate(blocks):
            try:
                exec(compile(block, f"docs/api.md block {i}", "exec"), namespace)
            except Exception as err:
                raise AssertionError(f"docs/api.md block {i} failed: {err!r}\n{block}") from err
    out = capsys.readouterr().out
    assert "zyx (16,) (96, 96)" in out and "(16, 96, 96) uint32" in out and "16/16 slices" in out
    assert "auto [7]" in out
    assert (work / "out" / "nuclei_labels.tif").is_file() and (work / "nuclei_labels.zarr").is_dir()
