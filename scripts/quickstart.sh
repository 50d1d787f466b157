#!/usr/bin/env bash
# End to end on a CPU in a few minutes: corpus -> tokenizer -> packed shards -> μP++ training of a tiny
# SambaY -> a checkpoint -> generation from it.
set -euo pipefail
OUT=${1:-runs/quickstart}
mkdir -p "$OUT"
sambay describe sambay --depth 8 --length 32768
python3 "$(dirname "$0")/make_toy_corpus.py" "$OUT/corpus.jsonl"
sambay tokenizer train --input "$OUT/corpus.jsonl" --vocab-size 320 --output "$OUT/tokenizer"
sambay data prepare --tokenizer "$OUT/tokenizer" --input "$OUT/corpus.jsonl" --output "$OUT/shards" --quiet
sambay train --preset sambay --tiny --d-model 64 --model-override vocab_size=320 --data "$OUT/shards" --tokens 600K --batch-tokens 4096 --base-batch-tokens 4096 \
    --micro-batch 8 --seq-len 128 --warmup-tokens 20000 --eta0 2e-3 --run-dir "$OUT/run" --ckpt-every 1000000 \
    --threads 2 --no-progress --log-every 50
CKPT=$(ls -d "$OUT"/run/checkpoints/step-* | sort | tail -n 1)
sambay generate --model "$CKPT" --tokenizer "$OUT/tokenizer" --prompt "three plus four is" --temperature 0 \
    --max-new-tokens 12 --stats
