#!/usr/bin/env bash
# The open GPU measurements, in at most three device calls of under 10 minutes each:
#   run(command="bash benchmarks/gpu_session.sh tests", timeout_s=300)
#   run(command="bash benchmarks/gpu_session.sh train", timeout_s=590)
#   run(command="bash benchmarks/gpu_session.sh generate", timeout_s=590)
# Results land in $OUT; copy them to benchmarks/results/ with the device name, date and command.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
case "${1:-}" in
  tests)  # every GPU-marked test (kernels in bf16 with poisoned outputs, engine, CUDA graphs)
    timeout 280 python -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -20 | tee "$OUT/gpu-tests.txt" ;;
  train)  # #7: d8 tokens/s + MFU for SambaY and Transformer++; #5: d16 step, fast vs reference kernels
    for arch in sambay transformer++; do
      timeout 150 python benchmarks/train_throughput.py --preset "$arch" --depth 8 --steps 10 --warmup 3 \
          --seq-len 4096 --micro-batch 4 --dtype bf16 --json 2>&1 | tail -14 | tee "$OUT/train-$arch-d8.txt"
    done
    for kernels in auto reference; do
      SAMBAY_KERNELS=$kernels timeout 140 python benchmarks/train_throughput.py --preset sambay --depth 16 \
          --steps 1 --warmup 1 --seq-len 4096 --micro-batch 2 --batch-tokens 32768 --dtype bf16 --json 2>&1 \
          | tail -14 | tee "$OUT/train-sambay-d16-$kernels.txt"
    done ;;
  generate)  # #6: 2K + 32K with all baselines, HF generate, and one 32K-token prompt's prefill
    timeout 560 python -m sambay bench generate --preset phi4-mini-flash --baseline phi4-mini \
        --baseline samba-yoco --baseline hf --prompt-len 2000 --gen-len 32000 --fill --points 4 --steps 5 \
        --long-prompt 32768 --json "$OUT/generate.json" 2>&1 | tee "$OUT/generate.txt" | tail -45 ;;
  *) echo "usage: gpu_session.sh tests|train|generate" >&2; exit 2 ;;
esac
