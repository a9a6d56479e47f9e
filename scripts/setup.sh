#!/usr/bin/env bash
# Create ./.venv and install holitom-deploy with every extra (export, bench, test), from scratch.
# The edge runtime alone is `pip install holitom-deploy` (see the README).
#
# torch is installed first, pinned on purpose: torch 2.14.1 + torchvision 0.29.1.
# torchvision is needed by transformers' LLaVA-OneVision video processor, which
# is our parity oracle for preprocessing; this pair is the newest that pip can
# take here, and it runs on CPU (it is a CUDA build, which also runs on GPUs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
"$VENV/bin/python" -m pip install -q -e ".[all]"
"$VENV/bin/python" -c "import torch, holitom; print(f'holitom {holitom.__version__} installed (torch {torch.__version__})')"
