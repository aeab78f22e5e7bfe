"""A small deterministic segmentation model for testing the tiling logic (not a mock).

It implements the predictor's ``Backend`` protocol with a classic algorithm instead of a
network: the foreground is "brighter than mid-grey", a positive click selects the bright
connected region it falls in, a box selects the bright pixels inside it, a negative click removes
its region. Like SAM, it only sees one tile at a time and answers at a quarter of the input
resolution, so objects crossing tile borders are clipped unless the predictor stitches tiles.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from napari_sam2.model import ImageFeatures

MEAN = 0.485
STD = 0.229


class FloodFillBackend:
    def __init__(self, image_size: int = 128) -> None:
        self.image_size = image_size
        self.model_id = f"flood-fill-{image_size}"
        self.encodes = 0

    def encode(self, image: torch.Tensor) -> ImageFeatures:
        self.encodes += 1
        e = image[None, :1]  # (1, 1, S, S) the normalised grey values
        z = torch.zeros(1, 1, 1, 1)
        return ImageFeatures(e.clone(), torch.zeros_like(e), (z, z))

    def decode(self, feats, coords, labels, mask_logits, multimask):
        grey = feats.embed[0, 0].numpy() * STD + MEAN  # back to [0, 1]
        fg = grey > 0.5
        lab, _ = ndimage.label(fg)
        mask = np.zeros_like(fg)
        if coords is not None:
            xy, lb = coords[0].numpy(), labels[0].numpy()
            corners = xy[(lb == 2) | (lb == 3)]
            if len(corners) == 2:
                (x0, y0), (x1, y1) = corners
                box = np.zeros_like(fg)
                box[int(y0) : int(np.ceil(y1)) + 1, int(x0) : int(np.ceil(x1)) + 1] = True
                mask |= fg & box
            for (x, y), label in zip(xy, lb):
                r, c = min(int(y), fg.shape[0] - 1), min(int(x), fg.shape[1] - 1)
                region = (lab == lab[r, c]) & fg[r, c]
                if label == 1:
                    mask |= region
                elif label == 0:
                    mask &= ~region
        if mask_logits is not None and coords is None:
            prior = (
                torch.nn.functional.interpolate(mask_logits, size=fg.shape, mode="bilinear")[0, 0].numpy() > 0
            )
            keep = np.unique(lab[prior & fg])
            mask |= np.isin(lab, keep[keep > 0])
        s4 = self.image_size // 4
        frac = mask.reshape(s4, 4, s4, 4).mean(axis=(1, 3))
        logits = torch.from_numpy((frac - 0.5) * 20).float()[None, None]
        k = 3 if multimask else 1
        return logits.expand(1, k, s4, s4).clone(), torch.tensor([[0.9, 0.8, 0.7][:k]])


class BatchedFlood(FloodFillBackend):
    """The flood-fill segmenter answering a batch of single-click prompts (one by one)."""

    def decode(self, feats, coords, labels, mask_logits, multimask):
        if coords is None or coords.shape[0] == 1:
            return super().decode(feats, coords, labels, mask_logits, multimask)
        outs = [
            super(BatchedFlood, self).decode(feats, coords[i : i + 1], labels[i : i + 1], None, multimask)
            for i in range(len(coords))
        ]
        return torch.cat([m for m, _ in outs]), torch.cat([s for _, s in outs])
