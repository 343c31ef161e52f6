#!/bin/sh
# make_golden.sh: regenerates tests/reference/golden/ with the independent
# PyTorch reference (mmmamba_ref.py, fp32). Run from the build directory (it
# needs the built `mmmamba` for mkmodel):
#   sh ../tests/reference/make_golden.sh          (or from the source tree root)
# Needs python3 with torch and numpy (Debian's python3-torch works, CPU).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
. "$here/cases.sh"
bin=${MMMAMBA:-./mmmamba}
py=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
case_tiles "$tmp/tiles.bin"
echo "$CASES" | while IFS='|' read -r name preset flags kind; do
  [ -n "$name" ] || continue
  # shellcheck disable=SC2086
  "$bin" mkmodel --preset "$preset" --seed $GOLDEN_SEED $flags --out "$tmp/$name" >/dev/null
  tiles=""
  [ "$kind" = image ] && tiles="--tiles $tmp/tiles.bin --num-tiles 2"
  # shellcheck disable=SC2086
  "$py" "$here/mmmamba_ref.py" --model "$tmp/$name" --ids "$(case_ids "$kind")" $tiles \
    --out "$here/golden/$name.logits" --greedy $GOLDEN_GREEDY > "$here/golden/$name.ids"
  echo "$name: $(cat "$here/golden/$name.ids")"
done
