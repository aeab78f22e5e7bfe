"""The :class:`Tracker`: frames, features and prompt intake; memory conditioning, scheduling,
crop geometry and review live in the sibling modules (see the package docstring)."""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch

from ...model import ImageFeatures, Sam2Model
from ...model._layers import resize_bilinear
from ...model.sam2_model import NO_OBJECT_LOGIT
from ..labels import MaskPatch, seed_objects
from ..prompts import Prompt, PromptError, prompt_tensors
from .crop import Crop, crop_around, cut, grown, touches_border
from .memory import MemoryMixin
from .review import FrameStats, drift_frames, frame_stats
from .schedule import ScheduleMixin
from .state import FrameResult, Track, TrackerError


class Tracker(MemoryMixin, ScheduleMixin):
    """Prompts on some frames -> masks on all frames, for any number of objects.

    Args:
        model: a :class:`Sam2Model` (on its compute device, in eval mode).
        frames: ``frames(i)`` returns frame i as a normalised model input (3, S, S). For
            crop tracking it must also have ``frames.crop(i, crop, size)`` returning the
            crop as a (3, size, size) model input (a
            :class:`~napari_sam2.engine.frames.FrameSequence` has both).
        num_frames: length of the sequence.
        frame_hw: (H, W) of the original frames: prompts are given and masks returned at it.
        feature_cache: how many frames' (or crops') image features to keep.
        retain: how many tracked frames behind the current one keep their memory and mask
            logits during propagation ("auto": ``num_maskmem - 1`` = 6, all that SAM2's memory
            reads). Older frames keep only their object pointer (1 KB) and the recipe of their
            computation, so memory does not grow with the number of frames; None keeps everything.
            When a later step needs a released frame (a correction click conditioned on the
            frames before it, a pass that starts mid-sequence), its memory and logits are
            recomputed exactly from the recipe, back to the nearest frames still held, and
            released again after use: results equal SAM2's whatever ``retain`` is, at the cost
            of recomputing at most the frames between the needed one and the start of the pass
            that computed it. A value below the default makes every pass recompute. A released
            frame has no logits for :meth:`frame_logits` (they were yielded when it was tracked).
        crop: None: the model sees each whole frame, resized to S x S. An int w (multiple of
            32): each object is tracked in its own square crop of at least w x w plane pixels
            around it, fed to the model at w x w (the same weights run at input size w), grown
            to twice the object's extent when the object is larger (then resized to w). "auto"
            (default): None when the frame fits the model input (max(H, W) <= S), else S.
        max_crop: the largest side a crop may grow to, in plane pixels (None: no limit
            beyond covering the frame). Bounds the time and memory per frame for objects that
            grow (or masks that leak); larger objects are cut at the crop's edge.
    """

    def __init__(
        self,
        model: Sam2Model,
        frames: Callable[[int], torch.Tensor],
        num_frames: int,
        frame_hw: tuple[int, int],
        feature_cache: int = 2,
        retain: int | str | None = "auto",
        crop: int | str | None = "auto",
        max_crop: int | None = None,
    ) -> None:
        if num_frames < 1:
            raise TrackerError("a sequence needs at least one frame")
        self.model = model
        self.frames = frames
        self.num_frames = num_frames
        self.frame_hw = (int(frame_hw[0]), int(frame_hw[1]))
        self.tracks: dict[int, Track] = {}
        self._features: OrderedDict[tuple, ImageFeatures] = OrderedDict()
        self._feature_cache = max(1, feature_cache)
        self._memory_pos: torch.Tensor | None = None
        self._order = itertools.count()
        self.retain = model.config.num_maskmem - 1 if retain == "auto" else retain
        size = model.config.image_size
        if crop == "auto":
            crop = None if max(self.frame_hw) <= size else size
        if crop is not None:
            if isinstance(crop, bool) or not isinstance(crop, int) or crop <= 0 or crop % 32:
                raise TrackerError(f"crop must be None, 'auto' or a positive multiple of 32, got {crop!r}")
            if not callable(getattr(frames, "crop", None)):
                raise TrackerError(
                    "crop tracking needs frames with a crop(i, crop, size) method, such as a FrameSequence; "
                    "pass crop=None to track whole frames"
                )
        if max_crop is not None and crop is not None and max_crop < crop:
            raise TrackerError(f"max_crop ({max_crop}) must be at least the crop ({crop})")
        self.crop_size = crop
        self.max_crop = max_crop
        self.net = model if crop is None else model.with_image_size(crop)

    # ------------------------------------------------------------------ frames and features
    @property
    def _cfg(self):
        return self.net.config

    def _check_frame(self, frame: int) -> None:
        if not 0 <= frame < self.num_frames:
            raise IndexError(
                f"frame {frame} is outside the sequence of {self.num_frames} frames (0..{self.num_frames - 1})"
            )

    def _track(self, obj_id: int) -> Track:
        if isinstance(obj_id, bool) or not isinstance(obj_id, int | np.integer) or obj_id <= 0:
            raise TrackerError(f"object ids are positive ints, got {obj_id!r}")
        return self.tracks.setdefault(int(obj_id), Track(int(obj_id)))

    def features(self, frame: int, crop: Crop | None = None) -> ImageFeatures:
        """Image features of ``frame`` (or of a crop of it), from the small cache or freshly encoded."""
        key = (frame, crop)
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        if crop is None or self.crop_size is None:
            image = self.frames(frame)
        else:
            image = self.frames.crop(frame, crop, self._cfg.image_size)
        feats = self.net.encode_image(image.to(self.net.device, self.net.dtype).unsqueeze(0))
        self._features[key] = feats
        while len(self._features) > self._feature_cache:
            self._features.popitem(last=False)
        return feats

    def _crop_around(
        self, box: tuple[float, float, float, float] | None, base: Crop | None = None
    ) -> Crop | None:
        """The crop for a mask with bounding box ``box`` (see :func:`.crop.crop_around`);
        None when whole frames are tracked."""
        if self.crop_size is None:
            return None
        return crop_around(box, self.frame_hw, self.crop_size, self.max_crop, base)

    # ------------------------------------------------------------------ results
    def _result(self, out, crop: Crop | None) -> FrameResult:
        """A FrameResult from a model output, with its area and bounding box in plane pixels."""
        low_res = out.low_res
        where = crop or Crop(0, 0, *self.frame_hw)
        n = low_res.shape[-1]
        sy, sx = where.height / n, where.width / n
        inside = low_res[0, 0] > 0
        area = float(inside.sum()) * sy * sx
        bbox = None
        if area > 0:
            rows = torch.nonzero(inside.any(dim=1)).flatten()
            cols = torch.nonzero(inside.any(dim=0)).flatten()
            bbox = (
                max(where.row0 + float(rows[0]) * sy, 0.0),
                max(where.col0 + float(cols[0]) * sx, 0.0),
                min(where.row0 + float(rows[-1] + 1) * sy, self.frame_hw[0]),
                min(where.col0 + float(cols[-1] + 1) * sx, self.frame_hw[1]),
            )
        iou = float(out.iou.reshape(-1)[0])
        return FrameResult(low_res, out.obj_ptr, out.object_score, crop=crop, iou=iou, area=area, bbox=bbox)

    def _patch(self, low_res: torch.Tensor | None, crop: Crop | None) -> MaskPatch:
        """Logits of one result at plane resolution over its crop."""
        if low_res is None or bool((low_res <= NO_OBJECT_LOGIT).all()):
            return MaskPatch.empty()
        crop = crop or Crop(0, 0, *self.frame_hw)
        logits = resize_bilinear(low_res, crop.hw)[0, 0]
        return MaskPatch(logits.float().cpu().numpy(), (crop.row0, crop.col0))

    def _to_frame_res(self, result: FrameResult) -> torch.Tensor:
        if result.crop is None:
            return resize_bilinear(result.low_res, self.frame_hw)[0, 0]
        full = self._patch(result.low_res, result.crop).full(self.frame_hw, fill=NO_OBJECT_LOGIT)
        return torch.from_numpy(full)

    def frame_logits(self, frame: int) -> dict[int, torch.Tensor]:
        """Mask logits (H, W) of every object that has a result on ``frame``."""
        out = {}
        for obj_id, track in self.tracks.items():
            r = track.result(frame)
            if r is not None and r.low_res is not None:
                out[obj_id] = self._to_frame_res(r)
        return out

    # ------------------------------------------------------------------ prompts
    @torch.inference_mode()
    def add_prompt(
        self, frame: int, obj_id: int, prompt: Prompt, clear: bool = True
    ) -> dict[int, torch.Tensor]:
        """Add clicks and/or a box for ``obj_id`` on ``frame``; returns that frame's logits.

        With ``clear=False`` the clicks add to the ones already on this frame. The previous
        result on this frame, if any, is given to the decoder as a mask prompt.
        """
        self._check_frame(frame)
        prompt.check_inside(self.frame_hw)
        if prompt.box is not None and not clear:
            raise PromptError("a box starts a new prompt on its frame: pass clear=True with a box")
        track = self._track(obj_id)
        if not clear and frame in track.prompts:
            old = track.prompts[frame]
            prompt = Prompt(
                points=np.concatenate([old.points, prompt.points]),
                labels=np.concatenate([old.labels, prompt.labels]),
                box=old.box,
            )
        track.prompts[frame] = prompt

        first_visit = frame not in track.reverse_at
        prev = track.result(frame)
        crop = self._prompt_crop(prompt, prev)
        prev_logits = None
        if prev is not None and prev.crop == crop:
            restored = self._restore([prev])  # a released frame's logits are recomputed (as SAM2 keeps them)
            if prev.low_res is not None:
                prev_logits = prev.low_res.clamp(-32.0, 32.0)
            for r in restored:
                r.release()
        for _ in range(4):  # a crop grows (at most 3 times) while the mask reaches its edge
            coords, labels = prompt_tensors(*self._prompt_geometry(prompt, crop))
            feats = self.features(frame, crop)
            if first_visit:
                embed = self.net.embed_without_memory(feats)
            else:
                embed, _ = self._conditioned(track, frame, feats, track.reverse_at[frame])
            out = self.net.predict_frame(
                embed, feats.high_res, coords, labels, prev_logits, multimask=labels.shape[1] <= 1
            )
            result = self._result(out, crop)
            bigger = None
            if crop is not None and touches_border(crop, result.bbox, self.frame_hw, self._cfg.low_res_size):
                bigger = grown(crop, self.frame_hw, self.max_crop)
            if bigger is None:
                break
            crop, prev_logits = bigger, None
        track.pending[frame] = result
        return self.frame_logits(frame)

    def _prompt_geometry(self, prompt: Prompt, crop: Crop | None) -> tuple:
        if crop is None:
            return prompt, self.frame_hw, self._cfg.image_size, self.net.device
        return prompt, crop.hw, self._cfg.image_size, self.net.device, (crop.row0, crop.col0)

    def _prompt_crop(self, prompt: Prompt, prev: FrameResult | None) -> Crop | None:
        if self.crop_size is None:
            return None
        coords = (
            np.concatenate([prompt.points, np.asarray(prompt.box).reshape(-1, 2)])
            if prompt.box
            else prompt.points
        )
        if prev is not None and prev.crop is not None and prev.crop.contains(coords):
            return prev.crop
        positive = prompt.points[prompt.labels == 1]
        anchor = (
            np.asarray(prompt.box).reshape(2, 2) if prompt.box else (positive if len(positive) else coords)
        )
        (r0, c0), (r1, c1) = anchor.min(axis=0), anchor.max(axis=0)
        return self._crop_around((r0, c0, r1, c1))

    @torch.inference_mode()
    def add_mask(self, frame: int, obj_id: int, mask: np.ndarray | torch.Tensor) -> dict[int, torch.Tensor]:
        """Use a binary (H, W) mask as ``obj_id``'s answer on ``frame``; returns the frame's logits."""
        self._check_frame(frame)
        m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
        if m.ndim != 2:
            raise ValueError(f"a mask prompt is a 2D (H, W) array, got shape {tuple(m.shape)}")
        if m.shape != self.frame_hw:
            raise TrackerError(
                f"the mask of object {obj_id} has shape {m.shape} but the frames are {self.frame_hw}; "
                "give a mask of the frame's size"
            )
        m = m.astype(bool)
        crop = None
        if self.crop_size is not None:
            rows, cols = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
            box = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1) if len(rows) else None
            crop = self._crop_around(box)
            m = cut(m, crop)
        s = self._cfg.image_size
        t = torch.from_numpy(m).to(self.net.device).float()[None, None]
        if tuple(t.shape[-2:]) != (s, s):
            t = (resize_bilinear(t, s, antialias=True) >= 0.5).float()
        track = self._track(obj_id)
        track.prompts.pop(frame, None)
        out = self.net.predict_from_mask(self.features(frame, crop), t)
        track.pending[frame] = self._result(out, crop)
        return self.frame_logits(frame)

    def seed_from_labels(self, labels, index: tuple[int, ...], frame: int) -> list[int]:
        """Seed every object of a labels plane: each positive id on ``labels[index]`` becomes a
        mask prompt on ``frame``. Returns the ids seeded (sorted).

        Raises:
            TrackerError: the labels plane does not have the frames' shape.
            LabelError: bad labels or index.
        """
        self._check_frame(frame)
        plane_hw = tuple(labels.shape[-2:])
        if plane_hw != self.frame_hw:
            raise TrackerError(
                f"labels planes are {plane_hw} but the frames are {self.frame_hw}; "
                "use labels of the image's size (the image's level 0 for multiscale data)"
            )
        masks = seed_objects(labels, index)
        for obj_id, mask in sorted(masks.items()):
            self.add_mask(frame, obj_id, mask)
        return sorted(masks)

    # ------------------------------------------------------------------ review
    def stats(self, obj_id: int | None = None) -> list[FrameStats]:
        """Per frame and object: object score, predicted IoU, area and area change, sorted by
        (frame, object). ``obj_id`` limits it to one object (see :func:`.review.frame_stats`)."""
        return frame_stats(self.tracks, obj_id)

    def drift_frames(self, min_iou: float = 0.5, max_area_change: float = 0.5) -> list[tuple[int, int, str]]:
        """Frames that look like drift, as (frame, obj_id, reason): the object is present with a
        predicted IoU below ``min_iou``, its area changed by more than ``max_area_change``
        (relative) from the neighbouring frame, or it vanished after being present there."""
        return drift_frames(self.stats(), min_iou, max_area_change)
