#!/usr/bin/env bash
# The GPU campaign, benchmarks/gpu_campaign.py: bash benchmarks/gpu_campaign.sh OUT [flags].
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec python3 -m benchmarks.gpu_campaign "$@"
