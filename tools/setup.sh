#!/usr/bin/env bash
# Make .venv and install lfcc-deploy into it. Idempotent: a second run only re-checks.
# torch/torchvision come first and pinned: on these machines the CPU-only torch file on disk
# breaks PyPI's torchvision, while 2.14.1 + 0.29.1 (a CUDA build that runs on CPU) work together.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  "${PIP[@]}" "torch==2.14.1" "torchvision==0.29.1"
fi
"${PIP[@]}" -e ".[dev]"
.venv/bin/lfcc-deploy --version
