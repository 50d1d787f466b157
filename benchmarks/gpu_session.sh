#!/usr/bin/env bash
# The open GPU measurements, in three device calls of under 10 minutes each (call 2 right after call 1,
# while the machine is still warm):
#   run(command="bash benchmarks/gpu_session.sh kernels_train", kind="nvidia-h100-x1", timeout_s=590)
#   run(command="bash benchmarks/gpu_session.sh generate", timeout_s=590)
#   run(command="bash benchmarks/gpu_session.sh multi_gpu", kind="nvidia-h200-x2", timeout_s=590)
# Results land in $OUT; copy them to benchmarks/results/ with the device name, date and command.
set -uo pipefail
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/device.txt"
train() {  # name, then train_throughput.py arguments
  local name=${1//+/p}; shift  # file names that come back from $OUT may not hold '+'

  timeout 150 python "${TRAIN_SCRIPT:-benchmarks/train_throughput.py}" --steps 10 --warmup 3 --seq-len 4096 \
    --dtype bf16 --json "$@" \
    2>&1 | grep -v '^USDT' | tee "$OUT/train-$name.txt" | tail -32
}
scan_gpu_tests() {  # 153 s on a cold H200 (2026-12-04)
  timeout 300 python -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_mamba_ops_gpu.py 2>&1 | tail -4 \
    | tee "$OUT/gpu-tests-scan.txt"
}
# The scan A/B modes compare the working tree's kernels with a base revision's file, written beforehand with
#   git show REV:sambay/ops/selective_scan/triton.py > benchmarks/_base_scan.py   (untracked; travels with the
# working tree) or named by SCAN_BASE; SCAN_REVS adds more "--rev NAME=PATH" revisions.
SCAN_BASE=${SCAN_BASE:-benchmarks/_base_scan.py}
scan_ab() {  # extra scan_ab.py arguments
  [ -f "$SCAN_BASE" ] || { echo "no base revision at $SCAN_BASE (see the comment above scan_ab)" >&2; return 1; }
  timeout 150 python benchmarks/scan_ab.py --rev "base=$SCAN_BASE" ${SCAN_REVS:-} "$@"
}
case "${1:-}" in
  kernels_train)  # #5 scan sweep and d16 fast-vs-reference step; #7 d8 tokens/s + MFU, SambaY vs Transformer++
    timeout 200 python benchmarks/kernels.py --sweep --only scan --out "$OUT/kernels-scan.txt" 2>&1 | tail -40
    for arch in sambay transformer++; do
      train "$arch-d8" --preset "$arch" --depth 8 --micro-batch 4 --profile 18
    done
    for kernels in auto reference; do
      SAMBAY_KERNELS=$kernels train "sambay-d16-$kernels" --preset sambay --depth 16 --steps 1 --warmup 1 \
        --micro-batch 2 --batch-tokens 32768
    done ;;
  scan_train)  # #5/#7 after time-segmented scan forward: GPU scan tests, scan sweep, compiled d8 both families
    scan_gpu_tests
    timeout 200 python benchmarks/kernels.py --sweep --only scan --out "$OUT/kernels-scan.txt" 2>&1 | tail -45
    for arch in sambay transformer++; do
      train "$arch-d8-compile" --preset "$arch" --depth 8 --micro-batch 4 --compile --profile 14
    done ;;
  scan_bwd)  # #5/#7: step backward kernel: GPU scan tests + the compiled-block graph-break test, scan sweep
    timeout 200 python -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_mamba_ops_gpu.py \
      "tests/ops/test_attention_gpu.py::test_forward_context_prebuilds_exactly_the_flex_masks_and_compiled_blocks_do_not_break" \
      2>&1 | tail -6 | tee "$OUT/gpu-tests-scan.txt"
    timeout 330 python benchmarks/kernels.py --sweep --only scan --out "$OUT/kernels-scan.txt" 2>&1 \
      | grep -E "bwd|fwd\+bwd|shape|result" ;;
  scan_ab)  # #5: GPU scan tests, the working tree's scan kernels against a base revision's, then the sweep
    scan_gpu_tests
    scan_ab --out "$OUT/scan-ab.txt"
    timeout 330 python benchmarks/kernels.py --sweep --only scan --out "$OUT/kernels-scan.txt" 2>&1 \
      | grep -E "variant|scan fwd|shape|result" ;;
  scan_full)  # #5: GPU scan tests, scan A/B against a base revision (SCAN_REVS for more), the full kernel sweep
    scan_gpu_tests
    scan_ab --out "$OUT/scan-ab.txt"
    timeout 360 python benchmarks/kernels.py --sweep --out "$OUT/kernels.txt" 2>&1 \
      | grep -E "variant|scan fwd|shape|result|decode|update|conv|fwd:|bwd:" ;;
  scan_ncu)  # #5: warp-stall and pipe statistics of the scan kernels (base revision and working tree), then d8
    [ -f "$SCAN_BASE" ] || { echo "no base revision at $SCAN_BASE" >&2; exit 1; }
    timeout 240 ncu --clock-control none --page details --section WarpStateStats --section SchedulerStats \
      --section ComputeWorkloadAnalysis --section Occupancy --section SpeedOfLight -k regex:_scan_ \
      python benchmarks/scan_ab.py --once --rev "base=$SCAN_BASE" ${SCAN_REVS:-} \
      > "$OUT/ncu-scan.txt" 2>&1; echo "ncu rc $?"
    scan_ab --out "$OUT/scan-ab.txt" | grep -E "vs|fwd"
    for arch in sambay transformer++; do
      train "$arch-d8-compile" --preset "$arch" --depth 8 --micro-batch 4 --compile --profile 14
    done ;;
  scan_train_ab)  # #5/#7: GPU scan tests, scan A/B against a base revision, then compiled d8 both families twice
    scan_gpu_tests
    scan_ab --out "$OUT/scan-ab.txt" | grep -E "vs|fwd"
    for round in 1 2; do
      for arch in sambay transformer++; do
        train "$arch-d8-compile-$round" --preset "$arch" --depth 8 --micro-batch 4 --compile --profile 14 \
          | grep -E "tokens_per_s|mfu_vs_measured|step_s"
      done
    done ;;
  train_ab)  # #7: compiled d8 of both families, a base revision's tree against the working tree, same call.
    # The base tree: git archive REV sambay benchmarks | tar -x -C benchmarks/_base_tree (untracked; travels
    # with the working tree; its train_throughput.py puts its own tree first on sys.path).
    base=benchmarks/_base_tree/benchmarks/train_throughput.py
    [ -f "$base" ] || { echo "no base tree at benchmarks/_base_tree (see the comment above)" >&2; exit 1; }
    for arch in sambay transformer++; do
      for tree in base candidate; do
        script=benchmarks/train_throughput.py; [ "$tree" = base ] && script=$base
        TRAIN_SCRIPT=$script train "$arch-d8-$tree" --preset "$arch" --depth 8 --micro-batch 4 --compile \
          | grep -E "tokens_per_s|mfu_vs_measured|step_s" | sed "s/^/[$arch $tree] /"
      done
    done ;;
  train_rounds)  # #7: compiled d8, SambaY and Transformer++ alternating for ROUNDS rounds (default 3), 20 steps each
    for round in $(seq 1 "${ROUNDS:-3}"); do
      for arch in sambay transformer++; do
        train "$arch-d8-round$round" --steps 20 --preset "$arch" --depth 8 --micro-batch 4 --compile \
          | grep -E "^\{" | sed "s/^/[$arch round $round] /"
      done
    done ;;
  conv_train_ab)  # #7: GPU tests of the changed kernels, conv A/B (benchmarks/_base_conv.py), then train_ab
    timeout 150 python -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_mamba_ops_gpu.py \
      tests/ops/test_cross_entropy_gpu.py 2>&1 | tail -3 | tee "$OUT/gpu-tests-conv.txt"
    timeout 100 python benchmarks/conv_ab.py --rev base=benchmarks/_base_conv.py --out "$OUT/conv-ab.txt"
    bash "$0" train_ab ;;
  ce_scan_train)  # #5/#7: GPU tests of the scan and the fused cross-entropy, scan A/B, compiled d8 both families
    timeout 150 python -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_mamba_ops_gpu.py \
      tests/ops/test_cross_entropy_gpu.py 2>&1 | tail -4 | tee "$OUT/gpu-tests-scan-ce.txt"
    scan_ab --out "$OUT/scan-ab.txt" | grep -E "vs|fwd|##"
    for arch in sambay transformer++; do
      train "$arch-d8-compile" --preset "$arch" --depth 8 --micro-batch 4 --compile --profile 24
    done ;;
  proj_train_ab)  # #7: the padded x_proj / dt_proj layout: one Mamba layer A/B, then compiled d8 SambaY with the
    # base tree (benchmarks/_base_tree, see train_ab) and the working tree, and Transformer++, each profiled
    timeout 100 python benchmarks/mamba_layer.py 2>&1 | tee "$OUT/mamba-layer.txt"
    timeout 150 python benchmarks/mamba_layer.py --compile 2>&1 | grep -v Warning | tee -a "$OUT/mamba-layer.txt"
    base=benchmarks/_base_tree/benchmarks/train_throughput.py
    [ -f "$base" ] || { echo "no base tree at benchmarks/_base_tree" >&2; exit 1; }
    TRAIN_SCRIPT=$base train sambay-d8-base --preset sambay --depth 8 --micro-batch 4 --compile --profile 40
    train sambay-d8-candidate --preset sambay --depth 8 --micro-batch 4 --compile --profile 40
    train transformerpp-d8 --preset transformer++ --depth 8 --micro-batch 4 --compile --profile 40 ;;
  corpus_train)  # #7: SambaY d8 and Transformer++ d8 on the real offline corpus (scripts/offline_corpus.py, shards
    # in runs/corpus/{train,val}, carried), compiled, a few minutes each, one process after the other
    for arch in sambay transformer++; do
      name=${arch//+/p}
      timeout 280 python -m sambay train --preset "$arch" --depth 8 --data runs/corpus/train \
        --val-data runs/corpus/val --tokens "${CORPUS_TOKENS:-40M}" --batch-tokens 131072 --micro-batch 4 \
        --seq-len 4096 --compile --eval-every 50 --eval-batches 8 --log-every 10 --no-progress \
        --no-tensorboard --ckpt-every 1000000 --run-dir "/tmp/run-$name" 2>&1 | grep -v -E "^USDT|Warning|warn" \
        | tee "$OUT/corpus-$name.txt" | tail -4
      cp "/tmp/run-$name/metrics.jsonl" "$OUT/metrics-$name.jsonl"
    done ;;
  h200_round)  # #5/#7 on the H200: GPU tests of the changed code, scan A/B (LOCAL-pass decay as exp2(A sum dt))
    # against benchmarks/_base_scan.py, the kernel report, then compiled d8 of both families in alternating rounds
    timeout 200 python -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_mamba_ops_gpu.py \
      tests/ops/test_attention_gpu.py tests/ops/test_cross_entropy_gpu.py 2>&1 | tail -4 | tee "$OUT/gpu-tests.txt"
    scan_ab --out "$OUT/scan-ab.txt" | grep -E "vs|fwd|##"
    timeout 150 python benchmarks/kernels.py --out "$OUT/kernels.txt" 2>&1 | tail -25
    OUT=/tmp/rounds ROUNDS=${ROUNDS:-3} bash "$0" train_rounds 2>&1 | tee "$OUT/train-rounds.txt" ;;
  train_d8)  # #7: compiled d8 SambaY vs Transformer++ (one process each, same call), with a profile
    for arch in sambay transformer++; do
      train "$arch-d8-compile" --preset "$arch" --depth 8 --micro-batch 4 --compile --profile 14
    done ;;
  decode)  # #6 batch-64 point: decode kernels' GPU tests, attention decode sweep, per-kernel profile, bench
    timeout 150 python -m pytest -q -m gpu -p no:cacheprovider tests/ops/test_attention_gpu.py \
      tests/engine/test_engine_gpu.py 2>&1 | tail -5 | tee "$OUT/gpu-tests-decode.txt"
    timeout 150 python benchmarks/attention.py --skip-prefill --sweep --out "$OUT/attention-decode.txt" | tail -40
    timeout 60 python benchmarks/profile_decode.py --batch 64 --context 32768 --top 12 2>&1 \
      | grep -v Warning | tee "$OUT/profile-decode.txt" | tail -18
    timeout 200 python -m sambay bench generate --preset phi4-mini-flash --baseline samba-yoco --prompt-len 2000 \
      --gen-len 32000 --batch 64 --points 4 --steps 5 --json "$OUT/generate-b64.json" 2>&1 \
      | tee "$OUT/generate-b64.txt" | tail -30 ;;
  generate)  # #6: 2K + 32K with all baselines, HF generate, and one 32K-token prompt's prefill
    timeout 570 python -m sambay bench generate --preset phi4-mini-flash --baseline phi4-mini \
        --baseline samba-yoco --baseline hf --prompt-len 2000 --gen-len 32000 --fill --points 4 --steps 5 \
        --long-prompt 32768 --json "$OUT/generate.json" 2>&1 | tee "$OUT/generate.txt" | tail -60 ;;
  multi_gpu)  # #7 FSDP2 over NCCL: tiny smoke runs of both families, then d8 on 2 GPUs against 1 GPU
    for arch in sambay transformer++; do
      timeout 120 python -m torch.distributed.run --nproc_per_node 2 benchmarks/train_throughput.py --tiny \
        --preset "$arch" --micro-batch 2 --steps 3 --warmup 1 --seq-len 512 --parallel fsdp --dtype bf16 2>&1 \
        | grep -E "Error|error:|tokens_per_s|last_loss" | sed "s/^/[$arch tiny fsdp x2] /"
    done
    train "sambay-d8-1gpu" --preset sambay --depth 8 --micro-batch 4 --parallel fsdp
    timeout 150 python -m torch.distributed.run --nproc_per_node 2 benchmarks/train_throughput.py --preset sambay \
      --depth 8 --micro-batch 4 --parallel fsdp --steps 10 --warmup 3 --seq-len 4096 --dtype bf16 --json 2>&1 \
      | grep -v '^USDT' | tee "$OUT/train-sambay-d8-2gpu.txt" | tail -24 ;;
  decode_compile)  # #5: the inductor-compiled decode step: its GPU tests, then eager vs compiled at batch 1, 16, 64
    timeout 200 python -m pytest -v -m gpu -p no:cacheprovider tests/engine/test_cuda_graphs.py \
      tests/ops/test_attention_gpu.py -k compile 2>&1 | grep -E "PASSED|FAILED|ERROR|passed|failed" \
      | tee "$OUT/gpu-tests-compile.txt"
    timeout 330 python benchmarks/decode_overhead.py --batch 1 16 64 --context 4096 --top 10 2>&1 \
      | grep -v -i warn | tee "$OUT/decode-overhead.txt" | grep -E "^##|^eager|^graphed|^compiled|^logits" ;;
  # Every GPU-marked test takes two calls: on a cold H200 the whole suite ran past 560 s (2026-12-04).
  gpu_tests)  # every GPU-marked test except the Mamba-kernel file (the slowest ones listed)
    timeout 560 python -m pytest -q -m gpu -p no:cacheprovider --durations=10 \
      --ignore=tests/ops/test_mamba_ops_gpu.py tests 2>&1 | tail -28 | tee "$OUT/gpu-tests.txt" ;;
  gpu_tests_mamba)  # the Mamba-kernel GPU tests
    scan_gpu_tests ;;
  *) echo "usage: gpu_session.sh kernels_train|scan_train|scan_bwd|scan_ab|scan_ncu|scan_train_ab|train_ab|train_rounds|conv_train_ab|ce_scan_train|proj_train_ab|corpus_train|h200_round|train_d8|decode|decode_compile|generate|multi_gpu|gpu_tests|gpu_tests_mamba" >&2
     exit 2 ;;
esac
