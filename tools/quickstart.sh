#!/usr/bin/env bash
# Fresh machine -> distilled, exported, benchmarked and gated student on digits (bundled, no download).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
start=$(date +%s)
.venv/bin/lfcc-deploy pipeline recipes/quickstart.toml --force "$@"
echo "quickstart: $(( $(date +%s) - start )) s (install excluded)"
