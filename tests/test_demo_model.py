"""The demo model shipped inside the package: loads offline, is the fallback default, segments."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy import ndimage

from napari_sam2 import ImagePredictor, Prompt, load_model
from napari_sam2.cli import main as cli_main
from napari_sam2.engine import models
from napari_sam2.model import Sam2Model
from napari_sam2.model.checkpoint import load_checkpoint, save_checkpoint
from napari_sam2.model.config import DEMO_CONFIG
from napari_sam2.model.weights import CACHE_ENV_VAR
from napari_sam2.training import demo, synthetic
from napari_sam2.training.demo import HELDOUT_SEED, DemoRecipe, _jsonable
from napari_sam2.training.finetune import TrainingConfig


def test_shipped_file_is_small_and_documented():
    path = models.demo_checkpoint_path()
    assert path.stat().st_size < 10 * 2**20
    recipe = json.loads(path.with_suffix(".json").read_text())
    assert recipe["name"] == "demo" and recipe["command"] == demo.COMMAND
    assert recipe["evaluation"]["click_iou_2d"] > 0 and recipe["training_seconds"] > 0
    assert recipe["recipe"] == _jsonable(demo.RECIPE_V1_1)  # the code's recipe is the shipped model's
    # v1.1's last stage resumed from the v1 file, whose stages 1-3 are recorded too
    assert recipe["started_from"]["stage"] == demo.RECIPE_V1_1.n_stages == 4
    assert recipe["stages_1_3"]["recipe"] == _jsonable(DemoRecipe())


def test_load_by_name_and_as_offline_default(tmp_path, monkeypatch):
    model = load_model("demo", device="cpu")
    assert model.config == DEMO_CONFIG and not model.training
    monkeypatch.setenv(CACHE_ENV_VAR, str(tmp_path))  # no official weights cached
    assert models.default_model_name() == "demo"
    assert load_model(None, device="cpu").config.name == "demo"


def test_demo_segments_a_generated_nucleus_from_one_click():
    stack = synthetic.nuclei_2d((256, 256), 8, seed=HELDOUT_SEED + 123)
    ids, areas = np.unique(stack.labels[stack.labels > 0], return_counts=True)
    truth = stack.labels == ids[np.argmax(areas)]
    depth = ndimage.distance_transform_edt(np.pad(truth, 1))[1:-1, 1:-1]
    click = np.unravel_index(np.argmax(depth), depth.shape)
    predictor = ImagePredictor(load_model("demo", device="cpu"))
    predictor.set_image(stack.image)
    mask = predictor.predict(Prompt([click], [1])).full(0)
    iou = (mask & truth).sum() / (mask | truth).sum()
    assert iou >= 0.8, iou


def test_later_stages_continue_and_a_run_resumes_bit_for_bit(tmp_path, monkeypatch):
    """A recipe with ``finetune`` stages trains them in turn on the same data: each continues the
    one before (not a fresh start), the JSON counts every stage's steps, and resuming from the
    file of stage 2 (``start_from``, ``start_stage=3``) writes the three-stage file bit for bit."""
    monkeypatch.setattr(demo, "evaluate_demo", lambda model: {"click_iou_2d": 0.5})  # not under test
    threads = torch.get_num_threads()
    with torch.inference_mode(False):  # training needs autograd (conftest runs tests in inference mode)
        first = TrainingConfig(
            steps=2, lr=1e-3, warmup_steps=1, max_objects=2, correction_rounds=0, clip_frames=2
        )
        small = DemoRecipe(  # one stage: the shipped recipe's later stages run thousands of steps
            training=first,
            finetune=(),
            n_2d=2,
            n_3d=0,
            n_moving=1,
            shape_moving=(3, 256, 256),
            memory_gain=None,
        )
        torch.set_num_threads(2)
        one = demo.train_demo(tmp_path / "one.pt", small, log=lambda msg: None)
        assert small.threads == 1 and torch.get_num_threads() == 2  # the caller's setting is restored
        second = replace(first, steps=3, seed=1)
        third = replace(first, steps=2, seed=2, clips_per_step=2)
        two = demo.train_demo(tmp_path / "two.pt", replace(small, finetune=(second,)), log=lambda msg: None)
        three_stages = replace(small, finetune=(second, third))
        three = demo.train_demo(tmp_path / "three.pt", three_stages, log=lambda msg: None)
        assert (one["steps_done"], two["steps_done"], three["steps_done"]) == (2, 5, 7)
        assert one["recipe"]["finetune"] == [] and [s["steps"] for s in three["recipe"]["finetune"]] == [3, 2]
        assert three["started_from"] is None
        # stage 2 by hand from the one-stage weights gives the two-stage file, bit for bit
        model = load_checkpoint(tmp_path / "one.pt")
        torch.set_num_threads(small.threads)
        try:
            demo.train(model, demo.training_data(small), second, device="cpu")
        finally:
            torch.set_num_threads(threads)
        expected = load_checkpoint(tmp_path / "two.pt").state_dict()
        before = load_checkpoint(tmp_path / "one.pt").state_dict()
        got = model.state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        assert not all(torch.equal(got[k], before[k]) for k in before)
        # stage 3 resumed from the stage-2 file: the three-stage file again
        again = tmp_path / "resumed" / "three.pt"  # same file name: torch writes it into the file
        resumed = demo.train_demo(
            again, three_stages, log=lambda msg: None, start_from=tmp_path / "two.pt", start_stage=3
        )
        assert again.read_bytes() == (tmp_path / "three.pt").read_bytes()
        assert resumed["steps_done"] == 2 and resumed["started_from"]["stage"] == 3
        assert (
            resumed["started_from"]["sha256"]
            == hashlib.sha256((tmp_path / "two.pt").read_bytes()).hexdigest()
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"start_stage": 2}, "resuming needs both start_from"),
        ({"start_from": "x.pt"}, "resuming needs both start_from"),
        ({"start_from": "x.pt", "start_stage": 99}, "start_stage must be between 1 and .*, got 99"),
        ({"start_from": "missing.pt", "start_stage": 2}, "checkpoint file not found"),
    ],
)
def test_bad_resume_arguments_give_clear_errors(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        demo.train_demo(tmp_path / "out.pt", DemoRecipe(), log=lambda msg: None, **kwargs)
    assert not (tmp_path / "out.pt").exists()


def test_resuming_from_another_model_is_refused(tmp_path):
    other = tmp_path / "other.pt"
    save_checkpoint(Sam2Model(replace(DEMO_CONFIG, name="other")), other)
    with pytest.raises(ValueError, match="is not a demo-model checkpoint"):
        demo.train_demo(
            tmp_path / "out.pt", DemoRecipe(), log=lambda msg: None, start_from=other, start_stage=2
        )


def test_cli_finetune_steps_need_one_number_per_later_stage(tmp_path, capsys):
    later = len(DemoRecipe().finetune)
    out = tmp_path / "out.pt"
    code = cli_main(["demo-model", "train", "--out", str(out), "--finetune-steps", *["5"] * (later + 1)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err
    assert f"the recipe has {later} later stage(s); give one number for each, got {later + 1}" in err
    assert not (tmp_path / "out.pt").exists()


def test_widened_data_joins_at_its_stage_only(tmp_path, monkeypatch):
    """Stages before ``widened_from_stage`` train on the generated data alone (so v1's stages are
    unchanged); from that stage on, the random-look planes and stacks and the PlantSeg stacks join."""
    from napari_sam2.training.real_data import plantseg_dir

    if not (plantseg_dir() / "1135_mini_raw.tif").is_file():
        pytest.skip("../shared/data/plantseg-nuclei is not here")
    monkeypatch.setattr(demo, "evaluate_demo", lambda model: {"click_iou_2d": 0.5})  # not under test
    seen = []
    real_train = demo.train

    def spy(model, data, config, **kwargs):
        seen.append([*sorted({type(d).__name__ + ":" + d.axes for d in data}), len(data)])
        return real_train(model, data, config, **kwargs)

    monkeypatch.setattr(demo, "train", spy)
    first = TrainingConfig(
        steps=1, lr=1e-3, warmup_steps=1, max_objects=1, correction_rounds=0, clip_frames=2
    )
    recipe = DemoRecipe(
        training=first, finetune=(replace(first, seed=1),), n_2d=2, n_3d=0, n_moving=0, memory_gain=None,
        widened_from_stage=2, n_microscopy_2d=2, n_microscopy_3d=1, shape_microscopy_3d=(12, 128, 128), n_plantseg=1,
    )  # fmt: skip
    with torch.inference_mode(False):
        info = demo.train_demo(tmp_path / "w.pt", recipe, log=lambda msg: None)
    assert seen[0][-1] == 2 and seen[1][-1] == 2 + 2 + 1 + 1
    assert "SyntheticStack:zyx" not in seen[0] and "SyntheticStack:zyx" in seen[1]
    assert info["recipe"]["n_plantseg"] == 1 and info["recipe"]["widened_from_stage"] == 2
    assert demo.RECIPES["v1"] == DemoRecipe() and demo.RECIPES["v2"].finetune[:2] == DemoRecipe().finetune
    assert demo.RECIPES["v2"].widened_from_stage == 4 == 2 + len(DemoRecipe().finetune)
