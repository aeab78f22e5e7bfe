"""napari-facing layer: the only package that imports napari or qtpy."""
