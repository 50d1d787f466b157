#!/usr/bin/env bash
# End to end on a CPU in a few minutes: corpus -> tokenizer -> packed shards -> μP++ training of a tiny
# SambaY -> a checkpoint -> generation from it. (`python3 -m sambay` is the `sambay` command, PATH or not.)
# One thread: the toy model's ops are tiny, and on a busy 2-core machine more threads only wait on each other.
# Running it again starts over (--overwrite).
set -euo pipefail
OUT=${1:-runs/quickstart}
mkdir -p "$OUT"
python3 -m sambay describe sambay --depth 8 --length 32768
python3 "$(dirname "$0")/make_toy_corpus.py" "$OUT/corpus.jsonl"
python3 -m sambay tokenizer train --input "$OUT/corpus.jsonl" --vocab-size 320 --output "$OUT/tokenizer" --force
python3 -m sambay data prepare --tokenizer "$OUT/tokenizer" --input "$OUT/corpus.jsonl" --output "$OUT/shards" --quiet
python3 -m sambay train --preset sambay --tiny --d-model 64 --model-override vocab_size=320 --data "$OUT/shards" --tokens 600K --batch-tokens 4096 --base-batch-tokens 4096 \
    --micro-batch 8 --seq-len 128 --warmup-tokens 20000 --eta0 2e-3 --run-dir "$OUT/run" --ckpt-every 1000000 \
    --threads 1 --log-every 50 --overwrite
# the run folder's newest checkpoint carries the tokenizer and EOS id of the data it was trained on
python3 -m sambay generate --model "$OUT/run" --prompt "three plus four is" --temperature 0 --max-new-tokens 12 --stats
