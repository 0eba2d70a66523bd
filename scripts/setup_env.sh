#!/usr/bin/env bash
# Create the project's virtual environment and install voxseg into it.
#
# torch: an importable torch in the base Python is kept (the venv sees it through
# --system-site-packages); otherwise `torch==$VOXSEG_TORCH` is installed: the CUDA build when
# an NVIDIA driver answers, else a wheel from pip's local find-links if one is there, else
# the CPU build from PyTorch's CPU wheel index ($VOXSEG_TORCH_INDEX overrides it).
# Every later install is constrained to the torch that is present, so no dependency can
# swap it for a multi-GB CUDA build.
set -euo pipefail
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${VOXSEG_TORCH:-2.13.0}

if [ ! -x "$VENV/bin/python" ]; then
  if "$PYTHON" -c "import torch" >/dev/null 2>&1; then
    echo "voxseg setup: keeping the installed torch $("$PYTHON" -c 'import torch; print(torch.__version__)')"
    "$PYTHON" -m venv --system-site-packages "$VENV"
  else
    "$PYTHON" -m venv "$VENV"
  fi
fi
PIP="$VENV/bin/python -m pip"
$PIP install --quiet --upgrade pip
# numpy first: torch imported without it warns "Failed to initialize NumPy"
$PIP install --quiet "numpy>=1.24"
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    echo "voxseg setup: NVIDIA driver found, installing torch==$TORCH_VERSION (CUDA build)"
    $PIP install --quiet "torch==$TORCH_VERSION"
  elif $PIP install --quiet --dry-run --no-index --no-deps "torch==$TORCH_VERSION" >/dev/null 2>&1; then
    # a wheel in pip's find-links (a local wheel folder) is used as it is
    echo "voxseg setup: installing torch==$TORCH_VERSION from a local wheel"
    $PIP install --quiet "torch==$TORCH_VERSION"
  else
    # no NVIDIA driver: PyTorch's CPU wheels, not PyPI's multi-GB CUDA build
    echo "voxseg setup: no NVIDIA driver, installing torch==$TORCH_VERSION (CPU build)"
    $PIP install --quiet "torch==$TORCH_VERSION" \
      --index-url "${VOXSEG_TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" \
      --extra-index-url https://pypi.org/simple
  fi
fi
INSTALLED=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
CONSTRAINTS=$(mktemp)
echo "torch==$INSTALLED" > "$CONSTRAINTS"
$PIP install --quiet -c "$CONSTRAINTS" -e ".[dev]"
rm -f "$CONSTRAINTS"
echo "voxseg setup: done ($("$VENV/bin/voxseg" --version))"
