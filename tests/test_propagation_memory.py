"""Peak RAM of a keyframe run does not grow with the length of the stack (each length in a fresh
process, peak resident memory read from /proc/self/status)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np, torch, zarr
    sys.path.insert(0, {tests!r})
    from helpers import make_model, square
    from napari_sam2.engine import FrameSequence, LabelWriter, Tracker, create_labels

    n, folder = int(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    # 256 x 256 frames and input: per frame and object, SAM2 keeps 16 KB of memory and 16 KB of
    # logits, so keeping every frame's state would add about 100 MB (3 objects, 1000 frames)
    image = zarr.create_array(store=folder + "/image.zarr", shape=(n, 256, 256), chunks=(1, 256, 256), dtype="uint16")
    rng = np.random.default_rng(0)
    for start in range(0, n, 50):  # written in blocks: the stack is never in memory as a whole
        image[start : start + 50] = rng.integers(0, 4000, size=(min(50, n - start), 256, 256), dtype=np.uint16)
    labels = create_labels((n, 256, 256), path=folder + "/labels.zarr", dtype="uint16")
    seq = FrameSequence(zarr.open_array(folder + "/image.zarr", mode="r"), window=(0, 4000), image_size=256)
    tracker = Tracker(make_model(score_bias=20.0, image_size=256), seq, n, seq.frame_hw, retain={retain})
    for obj, (r, c) in enumerate([(60, 60), (150, 200), (200, 40)], start=1):
        tracker.add_mask(n // 2, obj, square(r, c, half=20, shape=(256, 256)))
    report = tracker.run(LabelWriter(labels))
    assert len(report.frames) == n
    assert (labels[0] > 0).any() and (labels[n - 1] > 0).any()
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM"):
            print(int(line.split()[1]) // 1024)
    """
)


def peak_mib(n: int, folder: Path, retain: str = "'auto'") -> int:
    folder.mkdir()
    code = SCRIPT.format(tests=str(Path(__file__).parent), retain=retain)
    out = subprocess.run(
        [sys.executable, "-c", code, str(n), str(folder)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return int(out.stdout.split()[-1])


def test_peak_ram_of_1000_frames_is_within_10_percent_of_50(tmp_path):
    short = peak_mib(50, tmp_path / "short")
    long = peak_mib(1000, tmp_path / "long")
    assert long <= short * 1.10, f"peak RSS {long} MiB for 1000 frames vs {short} MiB for 50"
