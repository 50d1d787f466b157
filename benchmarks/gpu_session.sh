#!/usr/bin/env bash
# Everything the open GPU items need, in ONE device call (about 8 minutes on an H100):
#   run(command="bash benchmarks/gpu_session.sh", timeout_s=590)
# Results land in $OUT (generate.json/.txt, train-*.json, gpu-tests.txt); copy them to benchmarks/results/
# with the device name, date and command, then plot with benchmarks/plot_generate.py.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
timeout 150 python -m pytest -q -m gpu -p no:cacheprovider tests 2>&1 | tail -15 | tee "$OUT/gpu-tests.txt"
for arch in sambay transformer++; do
  timeout 90 python benchmarks/train_throughput.py --preset "$arch" --depth 8 --steps 10 --warmup 3 \
      --seq-len 4096 --micro-batch 4 --dtype bf16 --json 2>&1 | tail -12 | tee "$OUT/train-$arch-d8.txt"
done
timeout 240 python -m sambay bench generate --preset phi4-mini-flash --baseline phi4-mini --baseline samba-yoco \
    --baseline hf --prompt-len 2000 --gen-len 32000 --fill --points 4 --steps 5 --long-prompt 32768 \
    --json "$OUT/generate.json" 2>&1 | tee "$OUT/generate.txt" | tail -40
