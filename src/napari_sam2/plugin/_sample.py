"""Sample data for napari's File > Open Sample menu."""

from __future__ import annotations

from ..training import synthetic

__all__ = ["sample_nuclei_3d"]


def sample_nuclei_3d() -> list[tuple]:
    """A generated (32, 256, 256) uint16 stack of 10 nuclei (fixed seed), z spacing 2 pixels.

    Returns napari LayerData tuples: the image only (the ground truth is
    ``napari_sam2.training.synthetic.sample_nuclei_3d().labels``, kept out so users segment it).
    The demo model was trained on images drawn the same way.
    """
    stack = synthetic.sample_nuclei_3d()
    meta = {
        "name": "nuclei 3D (SAM2 sample)",
        "scale": stack.scale,
        "colormap": "gray",
        "axis_labels": ("z", "y", "x"),
        "metadata": {"napari_sam2_sample": "nuclei_3d"},  # the demo model's notice skips the sample
    }
    return [(stack.image, meta, "image")]
