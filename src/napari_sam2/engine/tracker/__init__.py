"""Track objects through a sequence of frames (video frames, z-slices or time points) with SAM2.

The state is typed: a :class:`Track` per object holding :class:`FrameResult` records. There are
two ways to run it:

* :meth:`Tracker.run` (the one to use): every prompted frame is a *keyframe*; each frame belongs
  to its nearest keyframe (a tie goes to the earlier one) and is tracked outward from it, forward
  after it and backward before it, conditioned on that keyframe and the frames between them only.
  Where the passes of two keyframes meet, the nearer keyframe decides, so results do not depend
  on the order of passes, and a new click re-runs only the frames the clicked frame now owns.
  Finished frames stream to a :class:`~napari_sam2.engine.labels.LabelWriter`, with progress,
  cancel, an optional stop after N absent frames, and per-frame statistics for review.
* :meth:`Tracker.propagate`: one pass from a start frame to one end with SAM2's own memory rules
  (all conditioning frames and any tracked frame in reach), equal to Meta's video predictor.

Memory selection follows SAM2 (see :func:`select_memories`), with three deliberate differences
from Meta's video predictor, each covered by a test:

* A click on a frame that was already tracked (a *correction*) makes that frame a
  conditioning frame, so later propagation keeps it. Meta's default predictor recomputes the
  frame without the click and silently drops the correction.
* Stored memories (bfloat16, as in SAM2) are cast to the compute dtype before use, so
  float32 runs never mix dtypes (Meta's predictor crashes when a frame has spatial memories but
  no object pointer, e.g. reverse tracking from the last frame).
* The temporal encoding of object pointers divides by ``max(min(num_frames, 16) - 1, 1)``, so
  a one-frame sequence does not produce NaN.

Frames larger than the model input are tracked at native resolution in a square *crop* per
object (``Tracker(crop=...)``): centred on the object's mask in the previous frame, re-centred
every frame and grown when the object grows, so a small object on a large plane is neither
squashed nor cut at tile borders.

RAM does not grow with the number of frames: behind a pass only ``retain`` frames keep their
memory and logits; older ones keep their object pointer and the :class:`Recipe` of their
computation, and are recomputed exactly (then released again) when a later step needs them,
e.g. a correction click conditioned on the frames before it. Results equal those of a tracker
that keeps everything.

The package is split by job: :mod:`.state` (typed records), :mod:`.memory` (memory selection,
conditioning, release and recomputation), :mod:`.crop` (crop geometry), :mod:`.schedule`
(:meth:`Tracker.propagate`, :meth:`Tracker.track`, :meth:`Tracker.run`), :mod:`.review`
(statistics and drift) and :mod:`.core` (the :class:`Tracker`: frames, features and prompts).
"""

from .core import Tracker
from .crop import Crop
from .memory import select_memories
from .review import FrameStats
from .state import MEMORY_DTYPE as MEMORY_DTYPE  # module names that importers of tracker.py used
from .state import (
    NOT_FOUND_HINT,
    FrameResult,
    Recipe,
    RunReport,
    Track,
    TrackerError,
    asks_for_an_object,
    not_found_message,
    segment_bounds,
)
from .state import Cancel as Cancel
from .state import Progress as Progress

__all__ = [
    "TrackerError",
    "Crop",
    "FrameResult",
    "FrameStats",
    "Recipe",
    "Track",
    "RunReport",
    "Tracker",
    "select_memories",
    "segment_bounds",
    "NOT_FOUND_HINT",
    "not_found_message",
    "asks_for_an_object",
]
