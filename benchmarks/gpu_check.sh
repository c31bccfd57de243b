#!/usr/bin/env bash
# GPU check (issue 20, item 6): the hf backend on benchmark v3's full probe set, random-weight models of
# the embedded architecture and of Llama-3-8B's shape, bf16 on one GPU. benchmarks/gpu_check.py says
# what is measured; benchmarks/README.md ("GPU check") how to run it.
#
#   bash benchmarks/gpu_check.sh --prepare    here, with the project's venv (ORT_BENCH_VENV, default .venv):
#                                             writes out/gpu_check/ (probes, tokenizer, wheels; ~16 MiB)
#   bash benchmarks/gpu_check.sh [OPTIONS]    on the GPU machine, out/gpu_check/ carried; OPTIONS go to
#                                             `gpu_check.py run` (--seconds-per-model, --models, ...)
#
# The GPU side fetches nothing: the missing packages are installed from the carried wheels into a
# temporary folder. PYTHON picks the interpreter (default python3, the one with torch); the whole run
# is killed after GPU_CHECK_TIMEOUT seconds (default 470; the script itself stops at about 420 s).
set -euo pipefail
cd "$(dirname "$0")/.."
prepared=out/gpu_check

if [[ "${1:-}" == "--prepare" ]]; then
  shift
  exec "${ORT_BENCH_VENV:-.venv}/bin/python" benchmarks/gpu_check.py prepare "$@"
fi

py=${PYTHON:-python3}
if [[ ! -f $prepared/manifest.json ]]; then
  echo "no $prepared/manifest.json: run 'bash benchmarks/gpu_check.sh --prepare' where the project's venv is," \
       "then carry $prepared" >&2
  exit 2
fi
site=$(mktemp -d /tmp/gpu_check_site.XXXXXX)
trap 'rm -rf "$site"' EXIT
echo "installing $(wc -l <"$prepared/wheels/requirements.txt") carried wheels into $site" \
     "($("$py" -c 'import platform; print("Python", platform.python_version())'))"
"$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
  --root-user-action=ignore --target "$site" --find-links "$prepared/wheels" -r "$prepared/wheels/requirements.txt"
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false \
  HF_HUB_OFFLINE=1
timeout -k 10 "${GPU_CHECK_TIMEOUT:-470}" "$py" benchmarks/gpu_check.py run "$@"
