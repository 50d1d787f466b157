#!/usr/bin/env bash
# One device call's worth of GPU work, in priority order, each part bounded; logs and JSON go to $OUT (or
# ./gpu-out). Run from the repository root on the device machine:
#   bash tools/gpu_session.sh [tests|serve-wheels|bench] ...   (default: tests bench)
# `serve-wheels` installs the server's packages from wheels/ (download them on a machine with the package
# index: pip download fastapi uvicorn prometheus-client openai httpx -d wheels/).
set -uo pipefail
export PYTHONPATH="$PWD"
OUT="${OUT:-gpu-out}"
mkdir -p "$OUT"
stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }
run() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  echo "[$(stamp)] $name: $*" | tee -a "$OUT/session.log"
  { echo "# $(stamp) $(git rev-parse --short HEAD 2>/dev/null) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null)"
    echo "# $*"; timeout "$limit" "$@"; echo "# exit $?"; } > "$OUT/$name.txt" 2>&1
  tail -3 "$OUT/$name.txt" | tee -a "$OUT/session.log"
}
parts=("${@:-tests bench}")
for part in ${parts[@]}; do
  case $part in
    tests)
      run gpu-tests-engine 240 python -m pytest -q -m gpu tests/engine tests/model tests/ops/test_attention_gpu.py \
          tests/ops/test_cross_entropy_gpu.py -k "not compile"
      run gpu-tests-compile 240 python -m pytest -q -m gpu tests/engine -k compile
      run gpu-tests-mamba 200 python -m pytest -q -m gpu tests/ops/test_mamba_ops_gpu.py ;;
    serve-wheels)
      run serve-wheels 120 python -m pip install --no-index --find-links wheels fastapi uvicorn prometheus-client openai httpx ;;
    bench)
      run sampling-ab 120 python tools/sampling_ab.py
      run bench-engine 540 python -m sambay bench engine --batch 256 --prompt-len 2000 --gen-len 4000 \
          --long-prompt 32768 --json "$OUT/engine-h100.json"
      run bench-prefix-cache 540 python -m sambay bench prefix-cache --baseline phi4-mini --json "$OUT/prefix-cache.json" ;;
    *) echo "unknown part $part" ;;
  esac
done
