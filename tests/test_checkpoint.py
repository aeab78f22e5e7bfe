"""Checkpoint files in the official layout: strict loading and errors a user can act on."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import napari_sam2
from napari_sam2.model import VARIANTS, Sam2Model
from napari_sam2.model.checkpoint import CheckpointError, identify_variant, load_checkpoint, save_checkpoint
from napari_sam2.model.weights import CACHE_ENV_VAR, MIRROR_ENV_VAR, WeightsUnavailableError


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory) -> tuple[Path, dict]:
    torch.manual_seed(3)
    model = Sam2Model(VARIANTS["sam2.1_hiera_tiny"])
    path = tmp_path_factory.mktemp("ckpt") / "sam2.1_hiera_tiny.pt"
    sd = model.state_dict()
    torch.save({"model": sd}, path)
    return path, sd


def test_official_layout_loads_strictly_and_identifies_the_variant(tiny_file):
    path, sd = tiny_file
    model = load_checkpoint(path)
    assert model.config.name == "sam2.1_hiera_tiny" and not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    assert identify_variant(sd) == "sam2.1_hiera_tiny"


def test_bare_state_dict_loads(tiny_file, tmp_path):
    _, sd = tiny_file
    bare = tmp_path / "bare.pt"
    torch.save(sd, bare)
    model = load_checkpoint(bare)
    assert torch.equal(model.no_obj_ptr, sd["no_obj_ptr"])


def test_readme_three_lines(tiny_file, tmp_path, capsys, monkeypatch):
    path, _ = tiny_file
    monkeypatch.chdir(path.parent)
    exec(
        "from napari_sam2 import load_model\n"
        'model = load_model("sam2.1_hiera_tiny.pt")\n'
        "print(model.config.name, sum(p.numel() for p in model.parameters()))\n",
        {},
    )
    assert capsys.readouterr().out.split() == ["sam2.1_hiera_tiny", "38962498"]


def test_file_of_another_variant_names_it(tiny_file):
    path, _ = tiny_file
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, config="sam2.1_hiera_small")
    msg = str(err.value)
    assert "sam2.1_hiera_small" in msg and "looks like 'sam2.1_hiera_tiny'" in msg
    assert "missing entries" in msg or "another shape" in msg


def test_sam20_file_into_sam21_model_lists_missing_keys(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "old.pt"
    torch.save({"model": Sam2Model(VARIANTS["sam2_hiera_tiny"]).state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path, config="sam2.1_hiera_tiny")
    msg = str(err.value)
    assert (
        "3 missing entries" in msg and "no_obj_embed_spatial" in msg and "looks like 'sam2_hiera_tiny'" in msg
    )


def test_truncated_file(tiny_file, tmp_path):
    path, _ = tiny_file
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: os.path.getsize(path) // 3])
    with pytest.raises(CheckpointError, match=r"truncated or corrupt.*download it again"):
        load_checkpoint(cut)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (b"", "is empty"),
        (b"<html>404 Not Found</html>", "truncated or corrupt"),
    ],
)
def test_garbage_files(tmp_path, content, pattern):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(path)


class NotATensor:
    pass


def test_pickled_objects_are_refused_not_executed(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"model": NotATensor()}, path)
    with pytest.raises(CheckpointError, match="other than tensors"):
        load_checkpoint(path)


def test_other_models_state_dict(tmp_path):
    path = tmp_path / "resnet.pt"
    torch.save({"model": {"conv1.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(CheckpointError, match="not of a SAM2 model"):
        load_checkpoint(path)
    torch.save({"epoch": 3}, path)
    with pytest.raises(CheckpointError, match="not a SAM2 checkpoint"):
        load_checkpoint(path)


def test_missing_file_and_unknown_name(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(CheckpointError, match="not found"):
        napari_sam2.load_model(str(tmp_path / "nope.pt"))
    with pytest.raises(KeyError, match="neither a file nor a known model name; names: sam2_hiera_tiny"):
        napari_sam2.load_model("sam3_giant")


def test_custom_config_round_trip(tmp_path):
    torch.manual_seed(1)
    cfg = replace(VARIANTS["sam2_hiera_tiny"], name="tiny-256", image_size=256)
    model = Sam2Model(cfg)
    path = save_checkpoint(model, tmp_path / "sub" / "custom.pt")
    again = load_checkpoint(path)
    assert again.config == cfg
    assert torch.equal(again.maskmem_tpos_enc, model.maskmem_tpos_enc)
    assert not list(path.parent.glob(".*tmp*"))
    # Meta's loader reads only ["model"]: the file stays in the official layout
    assert set(torch.load(path, weights_only=True)["model"]) == set(model.state_dict())


def test_official_name_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
    monkeypatch.setenv(MIRROR_ENV_VAR, "http://127.0.0.1:9")  # closed port: no network
    with pytest.raises(WeightsUnavailableError) as err:
        napari_sam2.load_model("sam2.1_hiera_tiny", download=False)
    msg = str(err.value)
    assert "sam2.1_hiera_tiny.pt" in msg and str(tmp_path / "cache") in msg and "https://" in msg


def test_official_name_downloads_through_the_verified_path(tiny_file, tmp_path, monkeypatch):
    """load_model("sam2.1_hiera_tiny") fetches the file (here only from a mirror on 127.0.0.1) and
    checks it against Meta's published size and SHA-256: our random-weight file is refused before
    it is downloaded, and nothing is cached."""
    import http.server
    import threading

    from napari_sam2.model import weights

    path, _ = tiny_file
    served = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(path.parent), **kwargs)

        def log_message(self, *args):
            served.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))
        mirror = f"http://127.0.0.1:{server.server_port}"
        monkeypatch.setattr(weights, "_default_urls", lambda info: [f"{mirror}/{info.filename}"])
        with pytest.raises(
            WeightsUnavailableError,
            match=r"announces [0-9,]+ bytes, but sam2\.1_hiera_tiny\.pt has 156,008,466",
        ):
            napari_sam2.load_model("sam2.1_hiera_tiny")
    finally:
        server.shutdown()
    assert any("sam2.1_hiera_tiny.pt" in p for p in served)
    assert not (tmp_path / "cache" / "sam2.1_hiera_tiny.pt").exists()


def test_demo_name_and_offline_default(tmp_path, monkeypatch):
    """``load_model("demo")`` loads the packaged demo file; without cached official weights the
    default is the demo; a missing demo file says so and how to make one."""
    from napari_sam2.engine import load_model, models
    from napari_sam2.model.config import DEMO_CONFIG

    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path / "cache"))  # no official weights cached
    monkeypatch.setattr(models, "DEMO_FILE", tmp_path / "data" / "demo_sam2.pt")
    assert models.default_model_name() == "demo"
    with pytest.raises(CheckpointError, match=r"does not ship one yet.*napari-sam2 demo-model train --out"):
        load_model("demo")
    with pytest.raises(CheckpointError, match="does not ship one yet"):
        load_model()  # the offline default
    models.DEMO_FILE.parent.mkdir()
    torch.manual_seed(0)
    save_checkpoint(Sam2Model(DEMO_CONFIG), models.DEMO_FILE)
    for model in (load_model("demo", device="cpu"), load_model(device="cpu"), models.default_model("cpu")):
        assert model.config == DEMO_CONFIG and model.config.name == "demo"
