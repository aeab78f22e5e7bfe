#!/usr/bin/env bash
# Set up everything the tests need: system libraries for a virtual screen, and .venv with the
# package (editable), its test extras (with the medical readers nibabel, pynrrd, pydicom) and the
# reference sam2 used as a test oracle.
# Idempotent: a re-run with unchanged pyproject.toml and setup.sh takes a second or two.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# (i) Xvfb and the GL/XCB libraries Qt needs to open a window on it.
apt_packages=(xvfb libgl1-mesa-dri libegl1 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1
    libxcb-randr0 libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libdbus-1-3
    libfontconfig1)  # libxcb-cursor0: Qt 6.5+ needs it for its xcb platform
missing=()
if command -v dpkg >/dev/null 2>&1; then
    for pkg in "${apt_packages[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
elif ! command -v xvfb-run >/dev/null 2>&1; then
    missing=("${apt_packages[@]}")
fi
if ((${#missing[@]})); then
    if command -v apt-get >/dev/null 2>&1; then
        sudo=()
        [[ $(id -u) -eq 0 ]] || sudo=(sudo)
        echo "setup: installing system packages: ${missing[*]}"
        "${sudo[@]}" apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    else
        echo "setup: warning: no apt-get; install Xvfb and the GL/XCB libraries yourself: ${missing[*]}" >&2
    fi
fi

# (ii) The virtual environment.
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv"
    python3 -m venv .venv
fi

# (iii) Python packages, skipped when nothing that decides them has changed.
stamp=.venv/.stamp
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ -f $stamp && $(<"$stamp") == "$want" ]]; then
    exit 0
fi
pip=(.venv/bin/python -m pip --disable-pip-version-check)
# Explicit pins: torchvision from the registry needs its matching torch (several GB with CUDA wheels).
"${pip[@]}" install --progress-bar off torch==2.15.0 torchvision==0.29.2
"${pip[@]}" install --progress-bar off -e ".[testing]"
# The reference implementation (test oracle only): no CUDA extension, no dependency changes.
"${pip[@]}" install --progress-bar off setuptools wheel
SAM2_BUILD_CUDA=0 "${pip[@]}" install --progress-bar off --no-build-isolation --no-deps sam2==1.1.0
# The authors' code of the other SAM2-family models (test oracles only). Each installs as a package named
# sam2, so each gets its own folder, which tests/family_oracle.py puts first on sys.path in a subprocess.
rm -rf .oracles/edgetam
"${pip[@]}" install --progress-bar off --no-deps --target .oracles/edgetam edgetam-dimos==1.0.1 timm==1.0.31
echo "$want" >"$stamp"
echo "setup: done"
