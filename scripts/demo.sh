#!/usr/bin/env bash
# The main job on a fresh machine: set up .venv (as the tests do), then the demo on the generated sample
# volume with the demo model shipped in the package. With a display, napari opens with the sample and
# the SAM2 widget; without one (or with --headless), every nucleus is clicked once, propagated through z,
# scored against the generator's ground truth and written to demo_labels.tif with its provenance.
# Extra arguments go to `napari-sam2 demo` (e.g. --headless, --out FILE).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
if [[ -z ${DISPLAY:-} && -z ${WAYLAND_DISPLAY:-} && " $* " != *" --headless "* ]]; then
    echo "demo: no display; running headless (napari needs a screen: run this on a desktop to see the widget)"
    set -- --headless "$@"
fi
exec .venv/bin/napari-sam2 demo "$@"
