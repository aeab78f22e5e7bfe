"""The demo model shipped inside the package: loads offline, is the fallback default, segments."""

from __future__ import annotations

import json

import numpy as np
from scipy import ndimage

from napari_sam2 import ImagePredictor, Prompt, load_model
from napari_sam2.engine import models, synthetic
from napari_sam2.engine.demo import HELDOUT_SEED, DemoRecipe, _jsonable
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
