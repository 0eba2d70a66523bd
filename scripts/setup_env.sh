#!/usr/bin/env bash
# Create the project's virtual environment and install voxseg into it.
#
# torch: an importable torch in the base Python is kept (the venv sees it through
# --system-site-packages); otherwise the CPU build `torch==$VOXSEG_TORCH` is installed.
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
if ! "$VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  echo "voxseg setup: installing torch==$TORCH_VERSION (CPU build)"
  $PIP install --quiet "torch==$TORCH_VERSION"
fi
INSTALLED=$("$VENV/bin/python" -c "import torch; print(torch.__version__.split('+')[0])")
CONSTRAINTS=$(mktemp)
echo "torch==$INSTALLED" > "$CONSTRAINTS"
$PIP install --quiet -c "$CONSTRAINTS" -e ".[dev]"
rm -f "$CONSTRAINTS"
echo "voxseg setup: done ($("$VENV/bin/voxseg" --version))"
