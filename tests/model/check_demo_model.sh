#!/bin/sh
# check_demo_model.sh: the shipped demo model (models/mmmamba-shapes, issue 14) through the real
# daemon on the CPU backend: every shipped sample picture (train/samples/answers.tsv) gets exactly
# its answer with greedy decoding, and train/eval.py on 50 fresh pictures (seed 2026, never used in
# training) reaches at least 90 % on every task (caption, colour, shape, count, position) through
# the HTTP API. Before that, the checkpoint passes `mmmamba inspect`, and train/check_engine.py
# finds the C engine, the training model (train/model.py) and the independent PyTorch reference
# (tests/reference/) giving the same greedy answers to five questions about one fresh picture.
# DEMO_MODEL=DIR checks another checkpoint. About 3 minutes on two cores. Needs Python with
# Pillow, numpy and torch ($PYTHON, default /usr/bin/python3).
set -eu
src=${top_srcdir:-.}
bin="${top_builddir:-.}/mmmambad"
py=${PYTHON:-/usr/bin/python3}
. "$src/tests/skip.sh"
. "$src/tests/daemon.sh"
PYTHONDONTWRITEBYTECODE=1; export PYTHONDONTWRITEBYTECODE
model=${DEMO_MODEL:-$src/models/mmmamba-shapes}
if [ ! -f "$model/model.safetensors" ]; then
  echo "FAIL: no demo model in $model"
  exit 1
fi
if ! "$py" -c 'import PIL, numpy, torch' 2>/dev/null; then
  mm_skip "$py with Pillow, numpy and torch is needed"
fi
"${top_builddir:-.}/mmmamba" inspect "$model" >/dev/null || { echo "FAIL: mmmamba inspect $model"; exit 1; }
"$py" "$src/train/check_engine.py" --model "$model" --mmmamba "${top_builddir:-.}/mmmamba" --n 1 ||
  { echo "FAIL: the engine, the training model and the reference disagree"; exit 1; }
mm_scratch
mm_daemon daemon "$bin" --model "$model" --backend cpu --max-seqs 8 --access-log no
url=http://127.0.0.1:$mm_port
rc=0
"$py" "$src/train/eval.py" --url "$url" --samples "$src/train/samples" --min-accuracy 1 || rc=1
# Under ASan+UBSan (mm_sanitizers=yes, from ./configure) the CPU engine runs about 17x slower:
# the same paths then go over the first 10 of those pictures.
n=50
[ "${mm_sanitizers:-no}" = yes ] && n=10
"$py" "$src/train/eval.py" --url "$url" --n $n --seed 2026 --min-accuracy 0.9 || rc=1
[ $rc -eq 0 ] || tail -5 "$tmp/daemon.log"
exit $rc
