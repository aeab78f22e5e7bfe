"""Image predictor: a plane of any size and dtype plus prompts -> masks in plane coordinates.

Planes no larger than the model input are resized to it as a whole, exactly like SAM2's own image
predictor. Larger planes are cut into overlapping tiles encoded at native resolution
(:mod:`.tiling`); embeddings are computed only for the tiles a prompt needs (or all at once with
:meth:`ImagePredictor.encode_all`) and kept in an :class:`~.cache.EmbeddingCache`.

How a prompt becomes one mask on a tiled plane:

1. *Seed tiles.* A prompt that fits in one tile goes to the tile whose centre is nearest to it,
   and, if it lies less than a quarter tile from that tile's inner edges, also to a tile-sized
   view centred on it (an object on a seam or where four tiles meet is then whole in one view;
   :meth:`.tiling.TileGrid.view_around`); a larger one (a big box, far-apart clicks) goes to every tile it overlaps, each with its own
   part of the prompt (box clipped to the tile).
2. *Growth.* Where a tile's mask reaches one of its edges that lies inside the plane, the object
   may go on in the neighbouring tile. That tile is decoded with positive clicks placed deepest
   inside the mask where the two tiles overlap (one per connected piece), plus the original clicks
   that fall in it, and so on until the object stops touching unexplored edges (or
   ``max_tiles`` is reached).
3. *Blending.* Overlapping tiles' logits are averaged with weights that fall to zero towards edges
   inside the plane (:func:`.tiling.blend_weights`), so there is no seam; the mask is the blended
   logits above 0, keeping the connected pieces under the positive clicks (for a box or a mask
   input: the pieces that touch the seed tiles' masks).

Coordinates are (row, col) plane pixels everywhere; :func:`.prompts.to_model_xy` is the only
place that turns them into the model's (x, y).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from scipy import ndimage

from ..model import ImageFeatures, Sam2Model
from ..model._layers import resize_bilinear
from ..model.prompt_encoder import PAD
from .cache import CacheKey, EmbeddingCache, weights_fingerprint
from .intensity import IntensityWindow, apply_window, resolve_window, to_model_input
from .labels import MaskPatch
from .prompts import Prompt, PromptError, prompt_tensors
from .sources import ImageSource, open_image
from .tiling import Tile, TileGrid, blend_weights

__all__ = ["PredictorError", "Prediction", "ImagePredictor", "Backend", "Sam2Backend"]

Progress = Callable[[int, int], None]
Cancel = Callable[[], bool]


class PredictorError(RuntimeError):
    """The predictor was used in the wrong order (e.g. predict before set_image) or cancelled."""


class Backend(Protocol):
    """What the predictor needs from a model: encode a tile, decode prompts on it."""

    image_size: int
    model_id: str

    def encode(self, image: torch.Tensor) -> ImageFeatures: ...

    def decode(
        self,
        feats: ImageFeatures,
        coords: torch.Tensor | None,
        labels: torch.Tensor | None,
        mask_logits: torch.Tensor | None,
        multimask: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class Sam2Backend:
    """:class:`Backend` over a :class:`Sam2Model` (decoding as SAM2's image predictor does)."""

    def __init__(self, model: Sam2Model) -> None:
        self.model = model
        self.image_size = model.config.image_size
        self.model_id = f"{model.config.name}:{weights_fingerprint(model)}"

    @torch.inference_mode()
    def encode(self, image: torch.Tensor) -> ImageFeatures:
        return self.model.encode_image(image[None].to(self.model.device, self.model.dtype))

    @torch.inference_mode()
    def decode(self, feats, coords, labels, mask_logits, multimask):
        m = self.model
        dev = m.device
        if coords is None:  # mask-only prompt: one padding point, as SAM2's video path does
            coords = torch.zeros(1, 1, 2)
            labels = torch.full((1, 1), PAD, dtype=torch.int32)
        feats = _on_device(feats, dev)  # cached features live on the CPU
        embed = m.embed_without_memory(feats)
        mask = None if mask_logits is None else mask_logits.to(dev, m.dtype)
        out = m.decode(embed, feats.high_res, coords.to(dev), labels.to(dev), mask, multimask)
        return out.masks.float().cpu(), out.iou.float().cpu()


OUTSIDE = -np.inf
"""The logit of a pixel of a :class:`Prediction`'s box that no decoded tile covered."""


@dataclass
class Prediction:
    """Masks for one prompt, as logits over the masks' bounding box (small for a small object).

    Attributes:
        logits: (K, h, w) float32 candidate logits over ``bbox`` of the plane, > 0 inside (K = 3
            with multimask output, else 1); pixels of separate pieces that were not kept hold at
            most 0, pixels no tile covered :data:`OUTSIDE`. (K, 0, 0) when every candidate is empty.
        scores: (K,) predicted IoU of each candidate.
        bbox: (row0, col0, row1, col1) of the plane that ``logits`` covers (ends exclusive): the
            bounding box of the union of the candidates' masks; (0, 0, 0, 0) when all are empty.
        plane_hw: (H, W) of the plane.
        tiles: grid indices of the tiles that were decoded (negative for a view centred on the
            prompt, see :meth:`.tiling.TileGrid.view_around`).
        low_res: per tile index, the decoder's (K, S/4, S/4) logits, to refine with a new prompt.
    """

    logits: np.ndarray
    scores: np.ndarray
    bbox: tuple[int, int, int, int]
    plane_hw: tuple[int, int]
    tiles: list[tuple[int, int]] = field(default_factory=list)
    low_res: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    @property
    def masks(self) -> np.ndarray:
        """(K, h, w) bool candidate masks over ``bbox``."""
        return self.logits > 0

    def patch(self, k: int = 0) -> MaskPatch:
        """Candidate ``k`` as a :class:`.labels.MaskPatch` over its own mask's bounding box (what
        :meth:`.labels.LabelWriter.write` takes); an empty patch if the candidate is empty."""
        box = _mask_box(self.logits[k] > 0)
        if box is None:
            return MaskPatch.empty()
        r0, c0, r1, c1 = box
        logits = np.array(self.logits[k, r0:r1, c0:c1], dtype=np.float32, copy=True)
        return MaskPatch(logits, (self.bbox[0] + r0, self.bbox[1] + c0))

    def full(self, k: int = 0) -> np.ndarray:
        """Candidate ``k`` as a (H, W) bool mask of the whole plane (allocates the whole plane)."""
        out = np.zeros(self.plane_hw, dtype=bool)
        r0, c0, r1, c1 = self.bbox
        out[r0:r1, c0:c1] = self.logits[k] > 0
        return out

    @property
    def best(self) -> int:
        """Index of the candidate with the highest predicted IoU."""
        return int(np.argmax(self.scores))


def _on_device(feats: ImageFeatures, device: torch.device) -> ImageFeatures:
    """``feats`` with every tensor on ``device`` (the same object when they already are)."""
    tensors = (feats.embed, feats.pos, *feats.high_res)
    if all(t.device == device for t in tensors):
        return feats
    embed, pos, h0, h1 = (t.to(device) for t in tensors)
    return ImageFeatures(embed, pos, (h0, h1))


@dataclass
class _TilePrompt:
    points: np.ndarray  # (N, 2) plane (row, col)
    labels: np.ndarray  # (N,)
    box: tuple[float, float, float, float] | None = None
    mask_logits: torch.Tensor | None = None  # (1, 1, S/4, S/4)


class ImagePredictor:
    """Segment planes of any size from clicks, boxes and mask inputs.

    Args:
        model: a :class:`Sam2Model` (or any :class:`Backend`).
        tile_size: tile side in plane pixels; default the model's input size (native resolution).
        overlap: minimum overlap of neighbouring tiles in pixels (default a quarter of a tile).
        cache: where tile embeddings are kept (default: in memory, 2 GiB).
        max_tiles: most tiles one prompt may grow over.
        edge_margin: a mask within this many pixels of an inner tile edge continues next door.
    """

    def __init__(
        self,
        model: Sam2Model | Backend,
        *,
        tile_size: int | None = None,
        overlap: int | None = None,
        cache: EmbeddingCache | None = None,
        max_tiles: int = 64,
        edge_margin: int = 8,
    ) -> None:
        self.backend: Backend = Sam2Backend(model) if isinstance(model, Sam2Model) else model
        self.tile_size = int(tile_size or self.backend.image_size)
        self.overlap = self.tile_size // 4 if overlap is None else int(overlap)
        self.cache = cache if cache is not None else EmbeddingCache()
        self.max_tiles = max_tiles
        self.edge_margin = edge_margin
        self.source: ImageSource | None = None
        self.frame: tuple[int, ...] = ()
        self.window: IntensityWindow | None = None
        self.grid: TileGrid | None = None
        self._windows: dict[tuple[str, object], IntensityWindow] = {}

    # ------------------------------------------------------------------ image
    def set_image(
        self,
        image: ImageSource | np.ndarray | object,
        *,
        frame: tuple[int, ...] | int = (),
        window: IntensityWindow | tuple[float, float] | str | None = None,
        axes: str | None = None,
        channel: int | None = None,
    ) -> None:
        """Choose the plane to segment: ``image`` (any source :func:`.sources.open_image` takes)
        at ``frame`` (e.g. ``(z,)`` or ``(t, z)``; ``()`` for a 2D image).

        ``window`` is the intensity window for the whole dataset: None for robust percentiles of a
        sample of all of it (computed once per dataset), a (low, high) pair such as napari's
        contrast limits, or a CT preset name. Nothing is encoded here.
        """
        source = image if isinstance(image, ImageSource) else open_image(image, axes=axes, channel=channel)
        frame = (frame,) if isinstance(frame, (int, np.integer)) else tuple(int(i) for i in frame)
        if len(frame) != len(source.frame_shape) or any(
            not 0 <= i < n for i, n in zip(frame, source.frame_shape)
        ):
            raise PromptError(
                f"frame index {frame} does not fit an image with frame axes {source.frame_shape} "
                f"(axes {source.axes!r}); give one index per leading axis"
            )
        key = (source.identity, window if not isinstance(window, list) else tuple(window))
        if key not in self._windows:
            self._windows[key] = resolve_window(window, source.sample_values)
        self.source, self.frame, self.window = source, frame, self._windows[key]
        if self.grid is None or self.grid.plane_hw != tuple(source.plane_hw):  # same plane size: same grid
            self.grid = TileGrid.for_plane(source.plane_hw, self.tile_size, self.overlap)

    def _require_image(self) -> tuple[ImageSource, TileGrid]:
        if self.source is None or self.grid is None:
            raise PredictorError("no image is set: call set_image(...) before predict(...)")
        return self.source, self.grid

    def _tile_input(self, tile: Tile) -> torch.Tensor:
        source, grid = self._require_image()
        r0, c0, r1, c1 = tile.clipped(grid.plane_hw)
        plane = apply_window(source.region(self.frame, slice(r0, r1), slice(c0, c1)), self.window)
        if not grid.untiled and plane.shape[:2] != (tile.height, tile.width):  # pad past the plane
            pad = [(0, tile.height - plane.shape[0]), (0, tile.width - plane.shape[1])] + [(0, 0)] * (
                plane.ndim - 2
            )
            plane = np.pad(plane, pad)
        return to_model_input(plane, self.backend.image_size)

    def _key(self, tile: Tile) -> CacheKey:
        source, _ = self._require_image()
        return CacheKey(
            data_id=source.identity,
            frame=self.frame,
            tile=tile.bounds(),
            model_id=self.backend.model_id,
            window=self.window.as_tuple(),
            image_size=self.backend.image_size,
        )

    def features(self, tile: Tile) -> ImageFeatures:
        """Embeddings of one tile, from the cache or freshly encoded (and cached)."""
        key = self._key(tile)
        feats = self.cache.get(key)
        if feats is None:
            feats = self.backend.encode(self._tile_input(tile))  # on the model's device
            self.cache.put(key, feats)  # the cache keeps its own CPU copy; ``feats`` stays where it is
        return feats

    def encode_all(self, progress: Progress | None = None, cancel: Cancel | None = None) -> int:
        """Compute (or find cached) embeddings for every tile; returns the number of tiles.

        ``progress(done, total)`` after each tile; ``cancel()`` returning True stops between tiles
        (raising :class:`PredictorError`); tiles finished so far stay cached.
        """
        _, grid = self._require_image()
        total = len(grid.tiles)
        for i, tile in enumerate(grid.tiles):
            if cancel is not None and cancel():
                raise PredictorError(f"encoding cancelled after {i} of {total} tiles")
            self.features(tile)
            if progress is not None:
                progress(i + 1, total)
        return total

    # ------------------------------------------------------------------ decoding
    def _decode(
        self, tile: Tile, tp: _TilePrompt, multimask: bool
    ) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
        """Decode on one tile -> (logits (K, h, w) over the tile's part of the plane, iou (K,), low-res)."""
        _, grid = self._require_image()
        view_hw = (tile.height, tile.width)
        coords = labels = None
        if len(tp.points) or tp.box is not None:
            origin = np.array([tile.row0, tile.col0], dtype=np.float64)
            box = None
            if tp.box is not None:
                b = np.asarray(tp.box, dtype=np.float64)
                box = (b[0] - origin[0], b[1] - origin[1], b[2] - origin[0], b[3] - origin[1])
            local = Prompt(
                points=tp.points - origin if len(tp.points) else np.zeros((0, 2)), labels=tp.labels, box=box
            )
            coords, labels = prompt_tensors(local, view_hw, self.backend.image_size)
        low, iou = self.backend.decode(self.features(tile), coords, labels, tp.mask_logits, multimask)
        r0, c0, r1, c1 = tile.clipped(grid.plane_hw)
        logits = resize_bilinear(low, view_hw)[0, :, : r1 - r0, : c1 - c0]
        return logits.numpy(), iou[0].numpy(), low[0]

    def _low_res_input(
        self, tile: Tile, mask_input: Prediction | np.ndarray | None, k: int
    ) -> torch.Tensor | None:
        """Mask input for ``tile``: a previous prediction's own logits, or a plane-sized array."""
        if mask_input is None:
            return None
        if isinstance(mask_input, Prediction):
            low = mask_input.low_res.get(tile.index)
            return None if low is None else low[min(k, low.shape[0] - 1)][None, None].clamp(-32, 32)
        _, grid = self._require_image()
        r0, c0, r1, c1 = tile.clipped(grid.plane_hw)
        crop = np.asarray(mask_input)[r0:r1, c0:c1]
        crop = np.where(crop, 10.0, -10.0) if crop.dtype == bool else crop.astype(np.float32)
        view = np.full((tile.height, tile.width), -10.0, dtype=np.float32)
        view[: r1 - r0, : c1 - c0] = crop
        low = resize_bilinear(
            torch.from_numpy(view)[None, None], self.backend.image_size // 4, antialias=True
        )
        return low

    def _seeds(self, prompt: Prompt | None, mask_input) -> list[tuple[Tile, _TilePrompt]]:
        _, grid = self._require_image()
        pts = np.zeros((0, 2)) if prompt is None else prompt.points
        labels = np.zeros(0, dtype=np.int64) if prompt is None else prompt.labels
        box = None if prompt is None else prompt.box
        corners = list(pts) + ([box[:2], box[2:]] if box is not None else [])
        if not corners:  # mask input only: every tile the mask overlaps
            if isinstance(mask_input, Prediction):
                box = _mask_box(mask_input.logits[0] > 0)
                if box is not None:  # from the prediction's box to the plane
                    r, c = mask_input.bbox[:2]
                    box = (box[0] + r, box[1] + c, box[2] + r, box[3] + c)
            else:
                box = _mask_box(np.asarray(mask_input) > 0)
            if box is None:
                raise PromptError("the mask input is empty: give clicks, a box or a non-empty mask")
            tiles = grid.tiles_overlapping(box[0], box[1], box[2] - 1, box[3] - 1)
            return [(t, _TilePrompt(np.zeros((0, 2)), np.zeros(0, dtype=np.int64))) for t in tiles]
        rows, cols = np.array([c[0] for c in corners]), np.array([c[1] for c in corners])
        views = self._views_for(rows, cols, mask_input)
        if views:
            return [(v, _TilePrompt(pts, labels, box)) for v in views]
        seeds = []
        for t in grid.tiles_overlapping(rows.min(), cols.min(), rows.max(), cols.max()):
            inside = np.array([t.contains(r, c) for r, c in pts], dtype=bool)
            tb = None
            if box is not None:
                tb = (
                    max(box[0], t.row0),
                    max(box[1], t.col0),
                    min(box[2], t.row1 - 1),
                    min(box[3], t.col1 - 1),
                )
            if tb is None and not (labels[inside] == 1).any():
                continue  # only negative clicks here: nothing to segment in this tile
            seeds.append((t, _TilePrompt(pts[inside], labels[inside], tb)))
        return seeds

    def _views_for(self, rows: np.ndarray, cols: np.ndarray, mask_input) -> list[Tile]:
        """The views a prompt that fits in one tile is decoded in, blended as seeds.

        The grid tile whose centre is nearest (its embeddings may be cached), and, where the
        prompt lies less than a quarter tile from one of that tile's inner edges, also a view
        centred on the prompt (:meth:`.TileGrid.view_around`), which holds an object near a seam
        or a four-tile corner whole instead of cut. Blending the two measured better with the
        demo model than either alone (tests/test_tiling_demo.py). When refining a previous
        :class:`Prediction`, its own centred view is kept if it still holds the points, so the
        refinement starts from that view's logits.
        """
        _, grid = self._require_image()
        best = grid.best_tile(rows, cols)
        view = grid.view_around(rows, cols)
        if best is None or view is None:
            return []
        if isinstance(mask_input, Prediction) and view.index not in mask_input.low_res:
            held = [grid.tile_at(i) for i in mask_input.low_res if i[0] < 0]
            held = [t for t in held if all(t.contains(r, c) for r, c in zip(rows, cols))]
            view = held[0] if held else view
        return [best] if view.index == best.index else [best, view]

    def _expansions(
        self, tile: Tile, logits: np.ndarray, done: set, prompt: Prompt | None
    ) -> list[tuple[Tile, _TilePrompt]]:
        """Neighbouring tiles into which the mask in ``tile`` continues, with their prompts."""
        _, grid = self._require_image()
        r0, c0, r1, c1 = tile.clipped(grid.plane_hw)
        mask = logits > 0
        if not mask.any():
            return []
        m = self.edge_margin
        edges = grid.interior_edges(tile)
        strips = {
            "top": (slice(0, m), slice(None)),
            "bottom": (slice(r1 - r0 - m, None), slice(None)),
            "left": (slice(None), slice(0, m)),
            "right": (slice(None), slice(c1 - c0 - m, None)),
        }
        touching = [side for side, inner in edges.items() if inner and mask[strips[side]].any()]
        if not touching:
            return []
        out = []
        for other in grid.tiles:
            if (
                other.row0 >= r1
                or other.col0 >= c1
                or other.row0 + other.height <= r0
                or other.col0 + other.width <= c0
            ):
                continue  # no overlap with ``tile`` (checked inline: a big plane has hundreds of tiles)
            if other.index in done or other.index == tile.index:
                continue
            o0, p0, o1, p1 = other.clipped(grid.plane_hw)
            ir0, ir1, ic0, ic1 = max(r0, o0), min(r1, o1), max(c0, p0), min(c1, p1)
            if ir0 >= ir1 or ic0 >= ic1:
                continue
            # the object must reach an edge of `tile` that lies inside `other`
            edge_hit = False
            for side in touching:
                sr, sc = strips[side]
                strip = np.zeros_like(mask)
                strip[sr, sc] = True
                strip[: ir0 - r0] = False
                strip[ir1 - r0 :] = False
                strip[:, : ic0 - c0] = False
                strip[:, ic1 - c0 :] = False
                if (mask & strip).any():
                    edge_hit = True
                    break
            if not edge_hit:
                continue
            overlap = mask[ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0]
            points = []
            lab, n = ndimage.label(overlap, structure=np.ones((3, 3)))
            sizes = ndimage.sum(overlap, lab, range(1, n + 1))
            for comp in np.argsort(sizes)[::-1][:3] + 1:
                depth = ndimage.distance_transform_edt(np.pad(lab == comp, 1))[1:-1, 1:-1]
                rr, cc = np.unravel_index(np.argmax(depth), depth.shape)
                points.append((rr + ir0, cc + ic0))
            labels = [1] * len(points)
            if prompt is not None:  # the user's own clicks that fall into this tile
                for (pr, pc), pl in zip(prompt.points, prompt.labels):
                    if other.contains(pr, pc):
                        points.append((pr, pc))
                        labels.append(int(pl))
            out.append(
                (other, _TilePrompt(np.array(points, dtype=np.float64), np.array(labels, dtype=np.int64)))
            )
        return out

    def predict(
        self,
        prompt: Prompt | None = None,
        *,
        mask_input: Prediction | np.ndarray | None = None,
        multimask: bool = False,
        progress: Progress | None = None,
        cancel: Cancel | None = None,
    ) -> Prediction:
        """Segment one object on the current plane.

        Args:
            prompt: clicks and/or a box in plane (row, col) pixels.
            mask_input: a previous :class:`Prediction` (its low-res logits refine the result, as in
                SAM) or a plane-sized bool mask / logit array.
            multimask: return three candidate masks (whole, part, subpart) instead of one.
            progress: ``progress(done, known)`` after each tile decoded (tiles not cached yet are
                encoded first, about a second each on a CPU); ``known`` grows as the object is
                found to continue into more tiles.
            cancel: ``cancel()`` returning True stops before the next tile (PredictorError).

        Raises:
            PromptError: no prompt, or a prompt outside the plane.
            PredictorError: no image set, or cancelled.
        """
        _, grid = self._require_image()
        if prompt is None and mask_input is None:
            raise PromptError("predict needs a prompt (clicks or a box) or a mask_input")
        if prompt is not None:
            prompt.check_inside(grid.plane_hw)
        if isinstance(mask_input, np.ndarray) and mask_input.shape[:2] != grid.plane_hw:
            raise PromptError(f"mask_input has shape {mask_input.shape}, the plane is {grid.plane_hw}")
        seeds = self._seeds(prompt, mask_input)
        if not seeds:
            raise PromptError("the prompt has no positive click or box on the plane")

        done = 0

        def step(known: int) -> None:
            nonlocal done
            if cancel is not None and cancel():
                raise PredictorError(f"prediction cancelled after {done} tiles")
            done += 1
            if progress is not None:
                progress(done, max(done, known))

        seed_out = []
        for tile, tp in seeds:
            step(len(seeds))
            tp.mask_logits = self._low_res_input(tile, mask_input, 0)
            seed_out.append((tile, *self._decode(tile, tp, multimask)))
        k_count = seed_out[0][1].shape[0]

        blended, scores, used, low_res = [], [], set(), {}
        for k in range(k_count):
            logits = {t.index: (t, lg[k]) for t, lg, _, _ in seed_out}
            for t, _, _, low in seed_out:
                low_res.setdefault(t.index, []).append(low[k])
            anchor_tiles = set(logits)
            queue = []
            for t, lg, _, _ in seed_out:
                if len(logits) < self.max_tiles:
                    queue += self._expansions(t, lg[k], set(logits), prompt)
            while queue and len(logits) < self.max_tiles:
                tile, tp = queue.pop(0)
                if tile.index in logits:
                    continue
                tp.mask_logits = self._low_res_input(tile, mask_input, k)
                step(done + len(queue) + 1)
                lg, _, low = self._decode(tile, tp, multimask=False)
                logits[tile.index] = (tile, lg[0])
                low_res.setdefault(tile.index, []).append(low[0])
                if len(logits) < self.max_tiles:
                    queue += self._expansions(tile, lg[0], set(logits) | {t.index for t, _ in queue}, prompt)
            blended.append(self._blend(logits, anchor_tiles, prompt))
            scores.append(float(np.mean([iou[k] for _, _, iou, _ in seed_out])))
            used |= set(logits)

        # the box of every candidate's mask, in plane pixels (row0, col0, row1, col1)
        boxes = [(b[0] + o[0], b[1] + o[1], b[2] + o[0], b[3] + o[1]) for lg, o in blended
                 if (b := _mask_box(lg > 0)) is not None]  # fmt: skip
        if boxes:
            r0, c0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
            r1, c1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        else:
            r0 = c0 = r1 = c1 = 0
        stacked = np.full((k_count, r1 - r0, c1 - c0), OUTSIDE, dtype=np.float32)  # (K, h, w)
        for k, (lg, (lr0, lc0)) in enumerate(blended):  # copy the overlap of each candidate's area
            a0, b0 = max(r0, lr0), max(c0, lc0)
            a1, b1 = min(r1, lr0 + lg.shape[0]), min(c1, lc0 + lg.shape[1])
            if a1 > a0 and b1 > b0:
                stacked[k, a0 - r0 : a1 - r0, b0 - c0 : b1 - c0] = lg[
                    a0 - lr0 : a1 - lr0, b0 - lc0 : b1 - lc0
                ]
        lows = {idx: torch.stack(v) for idx, v in low_res.items() if len(v) == k_count}
        bbox = (r0, c0, r1, c1)
        return Prediction(
            stacked, np.array(scores, dtype=np.float32), bbox, grid.plane_hw, sorted(used), lows
        )

    def _blend(
        self, logits: dict, anchor_tiles: set, prompt: Prompt | None = None
    ) -> tuple[np.ndarray, tuple[int, int]]:
        """Weighted average of overlapping tiles' logits -> (logits over the tiles' box, its origin).

        Pixels of pieces that do not belong to the prompt (see :func:`_pieces_at_prompt`) are
        lowered to at most 0, pixels no tile covers are :data:`OUTSIDE`.
        """
        _, grid = self._require_image()
        tiles = [t for t, _ in logits.values()]
        boxes = [t.clipped(grid.plane_hw) for t in tiles]
        r0, c0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        r1, c1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        num = np.zeros((r1 - r0, c1 - c0), dtype=np.float32)
        den = np.zeros_like(num)
        anchor = np.zeros(num.shape, dtype=bool)
        for (tile, lg), (t0, u0, t1, u1) in zip(logits.values(), boxes):
            w = blend_weights(grid, tile) if not grid.untiled else np.ones(lg.shape, np.float32)
            num[t0 - r0 : t1 - r0, u0 - c0 : u1 - c0] += w * lg
            den[t0 - r0 : t1 - r0, u0 - c0 : u1 - c0] += w
            if tile.index in anchor_tiles:
                anchor[t0 - r0 : t1 - r0, u0 - c0 : u1 - c0] |= lg > 0
        covered = den > 0
        logits = np.full(num.shape, OUTSIDE, dtype=np.float32)
        np.divide(num, den, out=logits, where=covered)
        if not grid.untiled:
            mask = _pieces_at_prompt(logits > 0, anchor, prompt, (r0, c0))
            np.minimum(logits, 0, out=logits, where=~mask & covered)
        return logits, (r0, c0)


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(row0, col0, row1, col1) of the True pixels of a 2D mask (ends exclusive); None if none."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _pieces_at_prompt(
    mask: np.ndarray, anchor: np.ndarray, prompt: Prompt | None, origin: tuple[int, int]
) -> np.ndarray:
    """On a tiled plane, the pieces of ``mask`` (8-connected) that belong to the prompt.

    With positive clicks: the pieces under them, or the piece nearest to them when no click lies
    on the mask (a blended mask can miss a click's own pixel). Otherwise (box, mask input): the
    pieces that touch what the seed views found (``anchor``). ``origin`` is the (row, col) of
    ``mask[0, 0]`` in the plane. An untiled plane keeps SAM2's own mask, pieces and all.
    """
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n <= 1:
        return mask
    clicks = np.zeros((0, 2), dtype=np.int64)
    if prompt is not None and len(prompt.points):
        pos = np.asarray(prompt.points, dtype=np.float64)[np.asarray(prompt.labels) == 1]
        clicks = np.rint(pos - np.asarray(origin)).astype(np.int64)
        inside = (clicks >= 0).all(axis=1) & (clicks < np.asarray(mask.shape)).all(axis=1)
        clicks = clicks[inside]
    if len(clicks):
        keep = np.unique(lab[clicks[:, 0], clicks[:, 1]])
        keep = keep[keep > 0]
        if not len(keep):  # no click on the mask: the piece nearest to one
            dist, (ir, ic) = ndimage.distance_transform_edt(lab == 0, return_indices=True)
            nearest = [lab[ir[r, c], ic[r, c]] for r, c in clicks]
            keep = np.array([nearest[int(np.argmin([dist[r, c] for r, c in clicks]))]])
    else:
        keep = np.unique(lab[anchor & mask])
        keep = keep[keep > 0]
    return np.isin(lab, keep)
