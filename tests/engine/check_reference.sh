#!/bin/sh
# check_reference.sh: the CPU engine against the independent PyTorch reference
# (tests/reference/mmmamba_ref.py). For every golden case of
# tests/reference/cases.sh: the last-position logits must agree within a
# relative error (max |a−b| / max |a|) of 1e-4 (fp32 vs fp32; measured ~1e-6)
# and the greedy continuation must be identical. One case is also re-run
# through the live reference so stale goldens cannot hide a drift.
set -eu
src=${top_srcdir:-.}
bin="${top_builddir:-.}/mmmamba"
py=${PYTHON:-/usr/bin/python3}
. "$src/tests/reference/cases.sh"
. "$src/tests/skip.sh"
if ! "$py" -c 'import numpy' 2>/dev/null; then
  mm_skip "$py with numpy is needed"
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case_tiles "$tmp/tiles.bin"
compare() { # golden logits, our logits, label -> prints the error, fails above tolerance
  "$py" - "$1" "$2" "$3" <<'PY'
import sys, numpy as np
a = np.fromfile(sys.argv[1], "<f4"); b = np.fromfile(sys.argv[2], "<f4")
if a.shape != b.shape: print(f"{sys.argv[3]}: shape {a.shape} vs {b.shape}"); sys.exit(1)
rel = float(np.abs(a - b).max() / np.abs(a).max())
print(f"{sys.argv[3]}: max rel logit error {rel:.2e}")
sys.exit(0 if rel <= 1e-4 else 1)
PY
}
pass=0; fails=0
echo "$CASES" > "$tmp/cases"
while IFS='|' read -r name preset flags kind; do
  [ -n "$name" ] || continue
  # shellcheck disable=SC2086
  "$bin" mkmodel --preset "$preset" --seed $GOLDEN_SEED $flags --out "$tmp/$name" >/dev/null
  tiles=""
  [ "$kind" = image ] && tiles="--tiles $tmp/tiles.bin --num-tiles 2"
  for chunk in 0 16; do
    label="$name"; extra=""
    if [ $chunk -ne 0 ]; then label="$name (prefill in chunks of $chunk)"; extra="--prefill-chunk $chunk"; fi
    # shellcheck disable=SC2086
    if ! "$bin" generate --model "$tmp/$name" --prompt-ids "$(case_ids "$kind")" $tiles $extra \
        --max-tokens $GOLDEN_GREEDY --ignore-eos --print-ids --dump-logits "$tmp/$name.logits" \
        > "$tmp/$name.ids" 2>"$tmp/$name.err"; then
      echo "FAIL: $label: generate failed"; cat "$tmp/$name.err"; fails=$((fails + 1)); continue
    fi
    if compare "$src/tests/reference/golden/$name.logits" "$tmp/$name.logits" "$label"; then
      pass=$((pass + 1)); else echo "FAIL: $label: logits"; fails=$((fails + 1)); fi
    if [ "$(cat "$tmp/$name.ids")" = "$(cat "$src/tests/reference/golden/$name.ids")" ]; then
      pass=$((pass + 1))
    else
      echo "FAIL: $label: greedy ids $(cat "$tmp/$name.ids") != $(cat "$src/tests/reference/golden/$name.ids")"
      fails=$((fails + 1))
    fi
  done
done < "$tmp/cases"
# live: the reference itself, on one text and one image case
if "$py" -c 'import torch, PIL' 2>/dev/null || mm_partial "torch or PIL not importable by $py: no live reference checks"; then
  for name in hybrid-text linear-post-norm-image; do
    kind=text; tiles=""
    case $name in *image) kind=image; tiles="--tiles $tmp/tiles.bin --num-tiles 2";; esac
    # shellcheck disable=SC2086
    "$py" "$src/tests/reference/mmmamba_ref.py" --model "$tmp/$name" --ids "$(case_ids $kind)" $tiles \
      --out "$tmp/live.logits"
    if compare "$tmp/live.logits" "$src/tests/reference/golden/$name.logits" "$name (live reference vs golden)"; then
      pass=$((pass + 1)); else echo "FAIL: $name: golden file is stale"; fails=$((fails + 1)); fi
  done
  # end to end: chat template + a PNG through decode/tiling (2 tiles + thumbnail) vs the reference
  "$py" -c '
import sys, numpy as np
from PIL import Image
x = np.fromfunction(lambda y, x, c: (x * 3 + y * 7 + c * 50) % 256, (200, 420, 3)).astype("uint8")
Image.fromarray(x).save(sys.argv[1])' "$tmp/img.png"
  "$bin" generate --model "$tmp/linear-text" --prompt "What is in the picture?" --image "$tmp/img.png" \
    --max-tokens 1 --dump-prompt-ids "$tmp/e2e.ids" --dump-logits "$tmp/e2e.logits" >/dev/null 2>&1
  tiles=$("$bin" preprocess "$tmp/img.png" --model "$tmp/linear-text" --out "$tmp/e2e.tiles" | cut -d' ' -f3)
  "$py" "$src/tests/reference/mmmamba_ref.py" --model "$tmp/linear-text" --ids "$(cat "$tmp/e2e.ids")" \
    --tiles "$tmp/e2e.tiles" --num-tiles "$tiles" --out "$tmp/e2e.ref"
  if compare "$tmp/e2e.ref" "$tmp/e2e.logits" "chat prompt + PNG ($tiles tiles), end to end"; then
    pass=$((pass + 1)); else echo "FAIL: end-to-end image prompt"; fails=$((fails + 1)); fi
fi
echo "$pass passed, $fails failed"
[ "$fails" -eq 0 ]
