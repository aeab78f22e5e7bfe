"""Comparisons the parity tests share: logits within a tolerance, binary masks away from the threshold.

``LOGIT_ATOL`` (1e-4) is the parity tolerance on logits; tests/test_parity_video.py explains it.
"""

from __future__ import annotations

import numpy as np
import torch

LOGIT_ATOL = 1e-4


def close(a, b, atol: float = LOGIT_ATOL) -> None:
    """Same shape and max |a - b| <= ``atol``."""
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a.float() - b.float()).abs().max().item() if a.numel() else 0.0
    assert diff <= atol, f"max abs diff {diff:.3g} > {atol}"


def same_masks(ref_logits, ours, atol: float = LOGIT_ATOL, max_near_flips: int | None = None) -> None:
    """Binary masks agree wherever the oracle's logit is more than ``atol`` from the threshold.

    ``ours`` is a boolean mask or logits (thresholded at 0). A pixel whose logit lies within
    ``atol`` of 0 may fall either side with another CPU's kernels (AVX2 vs AVX-512 summation
    order); at most ``max_near_flips`` such pixels may differ (default: one per 100,000 pixels,
    at least one), so a systematic shift near the threshold still fails.
    """
    ref_logits, ours = torch.as_tensor(ref_logits), torch.as_tensor(ours)
    ours = ours if ours.dtype == torch.bool else ours > 0
    differ = (ref_logits > 0) != ours
    near = ref_logits.abs() <= atol
    assert not (differ & ~near).any(), f"{int((differ & ~near).sum())} pixels differ away from the threshold"
    limit = max(1, ref_logits.numel() // 100_000) if max_near_flips is None else max_near_flips
    assert int((differ & near).sum()) <= limit, f"{int((differ & near).sum())} near-threshold pixels differ"


def iou(a, b) -> float:
    """Intersection over union of two boolean masks (0 for two empty masks)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float((a & b).sum() / max((a | b).sum(), 1))
