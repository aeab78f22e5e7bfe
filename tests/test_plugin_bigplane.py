"""Clicks on a 6000 x 6000 plane in a shown napari window: no freeze, small undo, memory bounded.

napari first, then the widget from its dock entry, as a user opens it; segmentation by the fast
deterministic flood-fill backend (tests/flood_backend.py) in the widget's worker thread, so what is
measured is the widget's own work in the GUI thread and napari's drawing. A 50 ms QTimer records
when the GUI thread was free; the longest gap between its ticks during a click is the longest
freeze. Figures measured on the 2-core CI machine are in docs/plugin.md.
"""

from __future__ import annotations

import gc
import os
import time
import types

import numpy as np
import pytest
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from flood_backend import FloodFillBackend
from napari_sam2.engine import load_model
from napari_sam2.training import synthetic

N = 6000
RADIUS = 25
CENTRES = [(300 + 180 * i, 400 + 170 * i) for i in range(31)]
DISC = np.add.outer(np.arange(-30, 31) ** 2, np.arange(-30, 31) ** 2) <= RADIUS**2
MIB = 2**20


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def big_plane() -> np.ndarray:
    """(6000, 6000) uint16: 31 bright discs of radius 25 on a dark background."""
    img = np.full((N, N), 1000, np.uint16)
    for r, c in CENTRES:
        img[r - 30 : r + 31, c - 30 : c + 31][DISC] = 30000
    return img


class GapMeter:
    """A 50 ms timer in the GUI thread; ``longest()`` is the longest time between two ticks."""

    def __init__(self) -> None:
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(50)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def __enter__(self) -> GapMeter:
        self.ticks = [time.perf_counter()]
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()
        self.ticks.append(time.perf_counter())

    def longest(self) -> float:
        return float(np.max(np.diff(self.ticks)))


@pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="reads the resident set from /proc (Linux)"
)
def test_clicks_on_a_6000_plane_write_only_the_object(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    image = viewer.add_image(big_plane(), name="big", contrast_limits=(0, 32000))
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM2 segmentation")
    widget.set_model(FloodFillBackend(256))
    widget.live_check.setChecked(True)
    assert widget.runner.threaded  # the default: the model runs in a worker thread
    # the output layer comes with the prompt layers, when the widget opens, not with the first click
    assert [layer.name for layer in viewer.layers] == ["big", "big SAM2 labels", "SAM2 boxes", "SAM2 prompts"]
    assert viewer.layers.selection.active.name == "SAM2 prompts"  # clicks go to the prompts
    qtbot.wait(1000)  # napari draws the new layers (a user cannot click before the window shows them)

    def click(i: int) -> float:
        with GapMeter() as meter:
            if i:
                widget.next_object()
            widget.add_click(CENTRES[i])
            qtbot.waitUntil(lambda: not widget.runner.busy and widget.tasks._queued is None, timeout=60_000)
            qtbot.wait(20)
        assert widget.last_error == ""
        return meter.longest()

    first = click(0)  # the labels layer exists already: the first click is a click like the others
    labels = viewer.layers["big SAM2 labels"]
    writes, refreshes = [], []
    real_setitem = labels.data_setitem

    def setitem(idx, value, refresh=True):
        writes.append(len(idx[0]))
        real_setitem(idx, value, refresh)

    labels.data_setitem = setitem
    labels.refresh = lambda *a, **k: refreshes.append(1)
    gc.collect()
    before = rss()
    gaps = [click(i) for i in range(1, 31)]
    gc.collect()
    grown = rss() - before
    del labels.data_setitem, labels.refresh

    # every object is its disc (the flood backend answers at a quarter resolution: IoU, not equality)
    ids, counts = np.unique(labels.data[labels.data > 0], return_counts=True)
    assert ids.tolist() == list(range(1, 32))
    for obj, (r, c) in enumerate(CENTRES, start=1):
        window = labels.data[r - 30 : r + 31, c - 30 : c + 31] == obj
        assert (window & DISC).sum() / (window | DISC).sum() > 0.98 and window.sum() == counts[obj - 1]
    # only the changed voxels went to the layer, through its partial refresh, never a full one
    assert writes == counts[1:].tolist() and refreshes == []
    undo = widget.session.undo_bytes()
    assert 0 < undo < 30 * 2 * 4 * 61 * 61 * 1.1  # two uint32 boxes of 51 x 51 voxels per step
    cache = widget.predictor.cache.nbytes
    print(
        f"\nfirst click: longest GUI gap {first:.3f} s; next 30 clicks: longest "
        f"{max(gaps):.3f} s, median {np.median(gaps):.3f} s; RSS +{grown / MIB:.0f} MiB (embedding cache "
        f"{cache / MIB:.0f} MiB, undo {undo / 1024:.0f} KiB)"
    )
    assert max([*gaps, first]) < 1.0  # generous: software OpenGL redraws the 6000 x 6000 canvas in this gap
    assert grown < 180 * MIB  # measured ~140 MiB on CI, 25 of them the embedding cache

    # once the layers are removed, nothing of the plugin holds the labels (144 MB) or their layer
    # (napari's canvas may keep a removed layer a while; that is napari's, not the plugin's)
    layer = getattr(labels, "__wrapped__", labels)
    for la in [la for la in viewer.layers if la is not image]:
        viewer.layers.remove(la)
    del labels, setitem
    QApplication.processEvents()
    gc.collect()
    assert held_by_plugin(layer, layer.data) == []


def held_by_plugin(*targets) -> list[str]:
    """Functions of napari_sam2 (callbacks, closures) whose closure holds one of ``targets`` or a
    proxy of one."""
    found = []
    for f in gc.get_objects():
        if not (
            isinstance(f, types.FunctionType)
            and (f.__module__ or "").startswith("napari_sam2")
            and f.__closure__
        ):
            continue
        for cell in f.__closure__:
            try:
                value = cell.cell_contents
            except ValueError:
                continue
            if type(value).__name__ == "PublicOnlyProxy":  # napari's proxy of a layer or viewer
                value = value.__wrapped__
            if any(value is t for t in targets):
                found.append(f.__qualname__)
    return found


def test_propagation_redraws_only_the_written_boxes_in_view(make_napari_viewer, qtbot):
    """A 32-slice propagation in the worker thread: the GUI thread redraws only the box written on
    the slice in view, never the whole layer, and stays responsive (longest 50 ms timer gap)."""
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("napari-sam2", "nuclei_3d")
    truth = synthetic.sample_nuclei_3d().labels
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM2 segmentation")
    widget.set_model(load_model("demo", device="cpu"), "demo")
    widget.live_check.setChecked(False)
    assert widget.runner.threaded
    obj = int(np.bincount(truth.ravel())[1:].argmax()) + 1
    z = int(np.argmax((truth == obj).sum(axis=(1, 2))))
    rows, cols = np.nonzero(truth[z] == obj)
    viewer.dims.set_current_step(0, z)
    widget.add_click((z, float(np.median(rows)), float(np.median(cols))))
    labels = widget.labels_layer()
    updates, refreshes = [], []
    labels.events.labels_update.connect(lambda e: updates.append((tuple(e.offset), e.data.shape)))
    labels.refresh = lambda *a, **k: refreshes.append(1)

    with GapMeter() as meter:
        widget.propagate()
        qtbot.waitUntil(lambda: not widget.runner.busy, timeout=300_000)
    del labels.refresh
    assert widget.last_error == "" and len(widget.last_report.frames) == 32
    assert refreshes == []  # never the whole layer
    # the redraws are the boxes of the slice in view, and they cover everything written there
    assert 1 <= len(updates) <= 2
    drawn = np.zeros(truth.shape[1:], bool)
    for (r0, c0), (h, w) in updates:
        drawn[r0 : r0 + h, c0 : c0 + w] = True
    written = labels.data[z] > 0
    assert written.sum() > 200 and not (written & ~drawn).any()
    assert drawn.sum() < 0.1 * drawn.size  # a box around the object, not the plane
    others = [k for k in range(32) if k != z and labels.data[k].any()]
    assert len(others) >= 8  # written on other slices, shown when the user goes there:
    viewer.dims.set_current_step(0, others[0])
    raw = labels.__wrapped__._slice.image.raw  # what napari draws
    np.testing.assert_array_equal(np.asarray(raw), labels.data[others[0]])
    print(f"\npropagation of 32 slices: longest GUI gap {meter.longest():.3f} s")
    assert meter.longest() < 1.0  # generous, as above; the figure is in docs/plugin.md
