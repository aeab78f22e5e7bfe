"""The demo model shipped inside the package: loads offline, is the fallback default, segments."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import torch
from scipy import ndimage

from napari_sam2 import ImagePredictor, Prompt, load_model
from napari_sam2.engine import demo, models, synthetic
from napari_sam2.engine.demo import HELDOUT_SEED, DemoRecipe, _jsonable
from napari_sam2.engine.training import TrainingConfig
from napari_sam2.model.checkpoint import load_checkpoint
from napari_sam2.model.config import DEMO_CONFIG
from napari_sam2.model.weights import CACHE_ENV_VAR


def test_shipped_file_is_small_and_documented():
    path = models.demo_checkpoint_path()
    assert path.stat().st_size < 10 * 2**20
    recipe = json.loads(path.with_suffix(".json").read_text())
    assert recipe["name"] == "demo" and recipe["command"].startswith(
        "python -m napari_sam2.engine.demo train"
    )
    assert recipe["evaluation"]["click_iou_2d"] > 0 and recipe["training_seconds"] > 0
    assert recipe["recipe"] == _jsonable(DemoRecipe())  # the code's recipe is the shipped model's


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


def test_a_second_stage_continues_from_the_first(tmp_path, monkeypatch):
    """A recipe with ``finetune`` trains twice on the same data: the file is the second stage's
    continuation of the first (not a fresh start), and the JSON counts both stages' steps."""
    monkeypatch.setattr(demo, "evaluate_demo", lambda model: {"click_iou_2d": 0.5})  # not under test
    threads = torch.get_num_threads()
    with torch.inference_mode(False):  # training needs autograd (conftest runs tests in inference mode)
        first = TrainingConfig(
            steps=2, lr=1e-3, warmup_steps=1, max_objects=2, correction_rounds=0, clip_frames=2
        )
        small = DemoRecipe(  # one stage: the shipped recipe's second stage would run 3,000 steps
            training=first,
            finetune=None,
            n_2d=2,
            n_3d=0,
            n_moving=1,
            shape_moving=(3, 256, 256),
            memory_gain=None,
        )
        torch.set_num_threads(2)
        one = demo.train_demo(tmp_path / "one.pt", small, log=lambda msg: None)
        assert small.threads == 1 and torch.get_num_threads() == 2  # the caller's setting is restored
        two_stages = replace(small, finetune=replace(first, steps=3, seed=1))
        two = demo.train_demo(tmp_path / "two.pt", two_stages, log=lambda msg: None)
        assert (one["steps_done"], two["steps_done"]) == (2, 5)
        assert two["recipe"]["finetune"]["steps"] == 3 and one["recipe"]["finetune"] is None
        # stage 2 by hand from the one-stage weights gives the two-stage file, bit for bit
        model = load_checkpoint(tmp_path / "one.pt")
        torch.set_num_threads(small.threads)
        try:
            demo.train(model, demo.training_data(small), two_stages.finetune, device="cpu")
        finally:
            torch.set_num_threads(threads)
        expected = load_checkpoint(tmp_path / "two.pt").state_dict()
        before = load_checkpoint(tmp_path / "one.pt").state_dict()
        got = model.state_dict()
        assert all(torch.equal(got[k], expected[k]) for k in expected)
        assert not all(torch.equal(got[k], before[k]) for k in before)
