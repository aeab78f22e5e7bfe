"""napari-sam2: Segment Anything 2 (SAM2) for napari, for large microscopy images and volumes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("napari-sam2")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
