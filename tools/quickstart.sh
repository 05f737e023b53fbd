#!/usr/bin/env bash
# Fresh machine -> trained, evaluated student: set up, then distil on digits (bundled, no download).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
start=$(date +%s)
.venv/bin/lfcc-deploy distill recipes/quickstart.toml --force "$@"
echo "quickstart: $(( $(date +%s) - start )) s (install excluded)"
