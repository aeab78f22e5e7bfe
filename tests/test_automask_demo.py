"""Segment everything with the shipped demo model on a generated 3D nuclei stack it never saw:
instance F1 at IoU 0.5 (each true nucleus matched to at most one predicted object in 3D)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.engine import load_model
from napari_sam2.engine.automask import segment_everything
from napari_sam2.training.synthetic import nuclei_3d

pytestmark = pytest.mark.slow

HELD_OUT = 9001  # the demo recipe trains on seeds 0-63, 1000-1011 and 2000-2011


def instance_f1(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """F1 of instance matching: a true and a predicted object match when their IoU (in 3D) is
    above ``threshold`` (> 0.5 makes matches unique)."""
    p_ids, t_ids = np.unique(pred[pred > 0]), np.unique(truth[truth > 0])
    pairs = np.stack([truth.ravel(), pred.ravel()], axis=1)
    pairs = pairs[(pairs > 0).all(axis=1)]
    inter_keys, inter = np.unique(pairs, axis=0, return_counts=True)
    t_area = dict(zip(*np.unique(truth[truth > 0], return_counts=True)))
    p_area = dict(zip(*np.unique(pred[pred > 0], return_counts=True)))
    matched = sum(1 for (t, p), n in zip(inter_keys, inter) if n / (t_area[t] + p_area[p] - n) > threshold)
    if not len(p_ids) and not len(t_ids):
        return 1.0
    return 2 * matched / (len(p_ids) + len(t_ids))


def test_instance_f1_helper():
    truth = np.zeros((2, 10, 10), np.uint16)
    truth[:, :5, :5], truth[:, 5:, 5:] = 1, 2
    pred = np.zeros_like(truth)
    pred[:, :5, :4] = 7  # IoU 0.8 with object 1
    pred[:, 8:, 8:] = 9  # IoU 0.36 with object 2: no match
    assert instance_f1(pred, truth) == pytest.approx(2 * 1 / 4)
    assert instance_f1(truth, truth) == 1.0


def test_demo_model_segments_every_nucleus_of_a_3d_stack():
    """With its default filters (AutoMaskConfig.for_model: the demo model's own thresholds), on
    nine held-out stacks of 8 nuclei. Measured with the shipped v1.2 file: 0.875, 0.857, 0.941,
    0.800, 0.875, 0.625, 0.857, 0.800, 0.857 (mean 0.832; v1.1 0.87, an earlier model 0.83, and
    SAM2's own thresholds kept too few masks with that one: 0.67, 0.50, 0.40 on the first three)."""
    model = load_model("demo", device="cpu")
    scores = []
    for seed in range(HELD_OUT, HELD_OUT + 9):
        stack = nuclei_3d((32, 256, 256), n_objects=8, seed=seed)
        report = segment_everything(model, stack.image)
        scores.append(instance_f1(np.asarray(report.labels), stack.labels))
        print(
            f"seed {seed}: instance F1 {scores[-1]:.3f}, {len(report.objects)} objects found, {stack.n_objects} true"
        )
    assert np.mean(scores) >= 0.82, scores
