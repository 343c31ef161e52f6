#!/bin/sh
# check_demo_train.sh: the demo model's training pipeline (train/) against the engine. Trains a
# tiny hybrid (hidden 32) for 3 steps on the CPU, then train/check_engine.py checks, for one
# fresh picture and five questions: the prompt ids of train/tokenizer.py equal the engine's
# (tokenizer, chat template, tile count), and the C engine, the training model (train/model.py)
# and tests/reference/mmmamba_ref.py give the same greedy tokens, and the first-token logits of
# the engine and the training model differ by at most 1e-4 of the largest (measured ~1e-7; a
# pixel-shuffle order slip gives ~1e-3). About 10 s. Needs /usr/bin/python3 with torch, numpy and Pillow.
set -eu
src=${top_srcdir:-.}
bin="${top_builddir:-.}/mmmamba"
py=${PYTHON:-/usr/bin/python3}
. "$src/tests/skip.sh"
PYTHONDONTWRITEBYTECODE=1; export PYTHONDONTWRITEBYTECODE
if ! "$py" -c 'import torch, numpy, PIL' 2>/dev/null; then
  mm_skip "$py with torch, numpy and Pillow is needed"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$py" "$src/train/train.py" --out "$tmp/model" --device cpu --workers 0 --steps 3 --batch-tokens 1200 \
  --hidden 32 --heads 2 --kv-heads 1 --intermediate 64 --max-tiles 2 --eval-n 0 --log-every 1 > "$tmp/train.log" 2>&1 ||
  { cat "$tmp/train.log"; exit 1; }
"$bin" inspect "$tmp/model" > /dev/null
"$py" "$src/train/check_engine.py" --model "$tmp/model" --mmmamba "$bin" --n 1 --max-tokens 3
