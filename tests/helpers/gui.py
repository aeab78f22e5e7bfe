"""Driving the widget as a user does: open it from napari's plugin menu action and click or type on
the canvas with real Qt mouse and key events (2D view)."""

from __future__ import annotations

from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest
from qtpy.QtWidgets import QApplication

PLUGIN, WIDGET = "napari-sam2", "SAM2 segmentation"


def open_widget(viewer, qtbot, demo=None, threaded=False):
    """Plugins > SAM2 segmentation, as the menu does it."""
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET)
    widget.runner.threaded = threaded
    if demo is not None:
        widget.set_model(demo, "demo")
    QApplication.processEvents()
    return dock, widget


def camera(viewer):
    scene = getattr(viewer, "scene", None)  # napari 0.9 moved the camera under viewer.scene
    return scene.camera if scene is not None else viewer.camera


def canvas(viewer):
    return viewer.window._qt_viewer.canvas.native


def click(viewer, world, modifier=Qt.KeyboardModifier.NoModifier):
    """A left click on the canvas where ``world`` (..., y, x) is drawn (2D view)."""
    native = canvas(viewer)
    cy, cx = camera(viewer).center[-2:]
    zoom = camera(viewer).zoom
    x = (world[-1] - cx) * zoom + native.width() / 2
    y = (world[-2] - cy) * zoom + native.height() / 2
    QTest.mouseClick(native, Qt.MouseButton.LeftButton, modifier, QPoint(round(x), round(y)))
    QApplication.processEvents()


def key(viewer, k, modifier=Qt.KeyboardModifier.NoModifier):
    QTest.keyClick(canvas(viewer), k, modifier)
    QApplication.processEvents()
