"""The cost of one click on a big plane: memory, undo record and Python calls, before and after.

One click = what the widget does once the tile's embedding is cached: ``segment_plane`` (decode,
blend, the object's mask) and writing it into the labels with an undo record
(``RecordingWriter``). The plane is 4096 x 4096 uint16 with a bright disc of about 50 pixels
across; the model is the shipped demo model on the CPU. Each source tree is measured in a fresh
process (peak RSS is per process):

- peak RSS above the RSS before the click (``VmHWM`` reset through ``/proc/self/clear_refs``),
- tracemalloc's peak during the click (numpy's buffers are counted),
- the undo record's bytes (the edits' ``before`` and ``after`` arrays),
- the Python function calls on the way (``sys.setprofile`` "call" events),
- the object's pixels, so both sides are seen to write the same mask.

``--before PATH`` measures another source tree (its ``src``) side by side, e.g. main before this
change::

    git archive <commit> src | tar -x -C /tmp/before-src
    .venv/bin/python benchmarks/bench_click.py --before /tmp/before-src/src

Without it only this tree is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"

CHILD = r"""
import gc, json, sys, time, tracemalloc
import numpy as np
import torch

torch.set_num_threads(1)
from napari_sam2.api.session import RecordingWriter, segment_plane
from napari_sam2.engine import ImagePredictor, Prompt, load_model, open_image

size, radius = int(sys.argv[1]), int(sys.argv[2])
plane = np.full((size, size), 1000, np.uint16)
rows, cols = np.ogrid[:size, :size]
r0, c0 = size // 2 + 37, size // 2 + 61  # off the tile grid's centres
plane[(rows - r0) ** 2 + (cols - c0) ** 2 <= radius**2] = 30000
del rows, cols
labels = np.zeros((size, size), np.uint32)
model = load_model("demo", device="cpu")
predictor = ImagePredictor(model)
source = open_image(plane)
prompt = Prompt(points=[[r0, c0]], labels=[1])
window = (0.0, 32000.0)
predictor.set_image(source, window=window)
predictor.predict(prompt)  # encodes the tiles the click needs: not part of the click


def click():
    writer = RecordingWriter(labels)
    writer.write((), {1: segment_plane(predictor, source, (), prompt, window)})
    return writer


def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))


def undo(writer):
    for edit in reversed(writer.edits):
        writer.writer.revert(edit)
    assert not labels.any()


gc.collect()
base = status("VmRSS:")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
except OSError:
    pass
t = time.perf_counter()
writer = click()
seconds = time.perf_counter() - t
peak_rss = status("VmHWM:") - base
pixels = int(np.count_nonzero(labels == 1))
undo_bytes = sum(e.before.nbytes + e.after.nbytes for e in writer.edits)
undo(writer)

gc.collect()
tracemalloc.start()
writer = click()
traced = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
undo(writer)

calls = 0


def count(frame, event, arg):
    global calls
    if event == "call":
        calls += 1


sys.setprofile(count)
writer = click()
sys.setprofile(None)
print("RESULT " + json.dumps({"peak_rss": peak_rss, "tracemalloc_peak": traced, "undo_bytes": undo_bytes,
                              "calls": calls, "pixels": pixels, "seconds": seconds}))
"""


def measure(src: Path, size: int, radius: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", CHILD, str(size), str(radius)]
    if os.name == "posix" and Path("/bin/sh").exists():  # a fresh ru_maxrss (see _common.py)
        cmd = ["/bin/sh", "-c", '"$0" "$@"; exit $?', *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"the click in {src} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=4096, help="plane side in pixels (default 4096)")
    parser.add_argument("--radius", type=int, default=25, help="disc radius in pixels (default 25)")
    parser.add_argument("--before", type=Path, help="another tree's src folder, measured side by side")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    runs = {}
    if args.before is not None:
        runs["before"] = measure(args.before, args.size, args.radius)
    runs["this tree"] = measure(SRC, args.size, args.radius)
    mib = 2**20
    print(f"one click on a {args.size} x {args.size} plane, a disc of radius {args.radius} (demo model, CPU)")
    print(f"{'':<12}{'peak RSS':>12}{'tracemalloc':>14}{'undo':>14}{'calls':>10}{'pixels':>8}{'s':>7}")
    for name, r in runs.items():
        print(
            f"{name:<12}{r['peak_rss'] / mib:>+10.1f}Mi{r['tracemalloc_peak'] / mib:>12.1f}Mi"
            f"{r['undo_bytes']:>13,}B{r['calls']:>10,}{r['pixels']:>8}{r['seconds']:>7.2f}"
        )
    if args.json is not None:
        args.json.write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
