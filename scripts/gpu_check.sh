#!/usr/bin/env bash
# The GPU check: ttsopt's CUDA code paths on random-weight models built from configs (nothing is
# downloaded), printing their figures (tokens/s, wall times) and the GPU's name. Under 5 minutes on one GPU.
#
#   bash scripts/gpu_check.sh                  # on a machine with CUDA; without one it says so and exits 0
#   bash scripts/gpu_check.sh --cpu            # dry-run the same checks on the CPU with small sizes
#   bash scripts/gpu_check.sh --only policy,prms --json gpu_check.json
#
# The same checks under pytest: python3 -m pytest -m gpu tests/test_gpu_check.py -s
# Exit status: 0 when every check passed (or there is no GPU and --cpu was not given), 1 otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
