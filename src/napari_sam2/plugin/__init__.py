"""napari-facing layer: the only package that imports napari, qtpy or magicgui."""
