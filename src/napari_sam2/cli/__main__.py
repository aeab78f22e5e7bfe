"""``python -m napari_sam2.cli``: the same as the ``napari-sam2`` command."""

from . import main

raise SystemExit(main())
