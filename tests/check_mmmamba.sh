#!/bin/sh
# check_mmmamba.sh: drives the built `mmmamba` tool end to end: mkmodel for
# every tiny preset (single file and sharded), inspect on each, and the
# error paths (bad preset, missing model) exit non-zero with a message.
set -eu
bin="${top_builddir:-.}/mmmamba"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
pass=0
check() { # name, then a command that must succeed
  name=$1; shift
  if "$@" >"$tmp/out" 2>&1; then pass=$((pass + 1)); else echo "FAIL: $name"; cat "$tmp/out"; fails=$((fails + 1)); fi
}
for p in tiny-linear tiny-hybrid tiny-teacher; do
  check "mkmodel $p" "$bin" mkmodel --preset $p --seed 5 --out "$tmp/$p"
  check "inspect $p" "$bin" inspect "$tmp/$p"
  check "mkmodel $p sharded" "$bin" mkmodel --preset $p --seed 5 --shards 2 --out "$tmp/$p-sh"
  check "inspect $p sharded" "$bin" inspect "$tmp/$p-sh"
  check "index present" test -f "$tmp/$p-sh/model.safetensors.index.json"
done
"$bin" inspect "$tmp/tiny-hybrid" > "$tmp/insp"
check "inspect says hybrid" grep -q "layout: hybrid (3 mamba2, 3 mha layers)" "$tmp/insp"
check "inspect says post" grep -q "pixel shuffle post" "$tmp/insp"
check "inspect counts params" grep -q "parameters 584328" "$tmp/insp"
check "mkmodel overrides" "$bin" mkmodel --preset tiny-linear --pixel-shuffle-loc post \
  --normalize-encoder-output 1 --image-size 112 --out "$tmp/ov"
"$bin" inspect "$tmp/ov" > "$tmp/insp"
check "override applied" grep -q "position grid 8x8, pixel shuffle post.*normalize_encoder_output true" "$tmp/insp"
# generate: chat prompt through the template, ids, stop token, chunked == whole
check "generate --prompt" "$bin" generate --model "$tmp/tiny-linear" --prompt "Hello there" --max-tokens 8
"$bin" generate --model "$tmp/tiny-linear" --prompt "Hello there" --max-tokens 8 --print-ids > "$tmp/a" 2>/dev/null
"$bin" generate --model "$tmp/tiny-linear" --prompt "Hello there" --max-tokens 8 --print-ids --prefill-chunk 5 > "$tmp/b" 2>/dev/null
check "chunked prefill gives the same ids" cmp "$tmp/a" "$tmp/b"
check "ids line" grep -Eq '^[0-9]+( [0-9]+)*$' "$tmp/a"
"$bin" tokenize --model "$tmp/tiny-linear" "Hi" > "$tmp/tok"
check "generate on ids from tokenize" sh -c "\"$bin\" generate --model \"$tmp/tiny-linear\" --prompt-ids \"\$(head -1 $tmp/tok)\" --max-tokens 2 --print-ids"
if "$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1 99999" 2>"$tmp/err"; then echo "FAIL: out-of-vocabulary id accepted"; fails=$((fails + 1)); fi
check "bad id message" grep -q "outside the vocabulary" "$tmp/err"
if "$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1 1032 1032" 2>"$tmp/err"; then echo "FAIL: stray image tokens accepted"; fails=$((fails + 1)); fi
check "stray image tokens message" grep -q "tile" "$tmp/err"
# the tiles given must match the prompt's image runs (the engine trusts the buffer)
img512=$(awk 'BEGIN { for (i = 0; i < 512; i++) printf " 1032" }')
head -c 2408448 /dev/zero > "$tmp/one.tile"
if "$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1$img512 5" --tiles "$tmp/one.tile" --num-tiles 1 2>"$tmp/err"; then
  echo "FAIL: 2 tiles of image tokens with 1 tile accepted"; fails=$((fails + 1)); fi
check "tile count mismatch message" grep -q "512 image-context tokens but 1 tiles" "$tmp/err"
if "$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1 2" --prefill-chunk 4611686018427387904 2>/dev/null; then
  echo "FAIL: absurd --prefill-chunk accepted"; fails=$((fails + 1)); fi
if "$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1 2" --tiles "$tmp/one.tile" 2>/dev/null; then
  echo "FAIL: --tiles without --num-tiles accepted"; fails=$((fails + 1)); fi
# hostile tokenizer files and image paths fail cleanly
cp -r "$tmp/tiny-linear" "$tmp/badtok"
echo '{"<x>": 1e300}' > "$tmp/badtok/added_tokens.json"
if "$bin" tokenize --model "$tmp/badtok" hi 2>"$tmp/err"; then echo "FAIL: 1e300 token id accepted"; fails=$((fails + 1)); fi
check "bad added-token id message" grep -q "not an integer id" "$tmp/err"
mkfifo "$tmp/fifo"
if timeout 10 "$bin" preprocess "$tmp/fifo" --out "$tmp/o" 2>"$tmp/err"; then echo "FAIL: FIFO accepted"; fails=$((fails + 1)); fi
check "FIFO refused, not waited on" grep -q "not a regular file" "$tmp/err"
# error paths: non-zero exit and a message naming the problem
if "$bin" mkmodel --preset nope --out "$tmp/x" 2>"$tmp/err"; then echo "FAIL: bad preset accepted"; fails=$((fails + 1)); fi
check "bad preset message" grep -q 'unknown preset "nope"' "$tmp/err"
if "$bin" inspect "$tmp/none" 2>"$tmp/err"; then echo "FAIL: missing model accepted"; fails=$((fails + 1)); fi
check "missing model message" grep -q "config.json" "$tmp/err"
rm "$tmp/tiny-linear-sh/model-00002-of-00002.safetensors"
if "$bin" inspect "$tmp/tiny-linear-sh" 2>"$tmp/err"; then echo "FAIL: missing shard accepted"; fails=$((fails + 1)); fi
check "missing shard message" grep -q "model-00002-of-00002.safetensors" "$tmp/err"
if "$bin" frobnicate 2>/dev/null; then echo "FAIL: unknown command accepted"; fails=$((fails + 1)); fi
echo "$pass passed, $fails failed"
[ "$fails" -eq 0 ]
