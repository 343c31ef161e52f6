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
# name, exit code, extended regex the output (stdout+stderr) must match, then the command
expect() {
  name=$1 want=$2 pattern=$3; shift 3
  set +e; "$@" >"$tmp/out" 2>&1; got=$?; set -e
  if [ "$got" -ne "$want" ]; then
    echo "FAIL: $name: exit $got, expected $want"; cat "$tmp/out"; fails=$((fails + 1))
  elif ! grep -Eq -- "$pattern" "$tmp/out"; then
    echo "FAIL: $name: output does not match /$pattern/"; cat "$tmp/out"; fails=$((fails + 1))
  else pass=$((pass + 1)); fi
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
expect "unknown command" 2 "unknown command 'frobnicate'" "$bin" frobnicate
# CLI manners: help, version, per-command option lists with defaults, messages that say what is wrong
expect "no command: usage" 2 "^usage: mmmamba COMMAND" "$bin"
expect "help lists commands" 0 "^  preprocess +decode and tile" "$bin" help
expect "help names the log variable" 0 "MMMAMBA_LOG=debug\|info" "$bin" --help
expect "--version" 0 "^mmmamba \(mmmambad\) [0-9]+\.[0-9]+" "$bin" --version
expect "help COMMAND" 0 "^  --max-tokens N +most tokens to generate \(default 16\)" "$bin" help generate
for sub in mkmodel inspect generate tokenize preprocess; do
  expect "$sub --help" 0 "^usage: mmmamba $sub " "$bin" $sub --help
done
"$bin" generate --help > "$tmp/help"
for o in --prompt --prompt-file --image --system --ignore-eos --prompt-ids --tiles --num-tiles \
    --print-ids --dump-logits --dump-prompt-ids --backend --threads --prefill-chunk --state; do
  check "generate --help lists $o" grep -q -- "^  $o " "$tmp/help"
done
check "generate usage leads with --prompt, --image, --system, --ignore-eos" \
  grep -Eq -- "^usage: mmmamba generate .*--prompt TEXT.*--image IMAGE.*--system TEXT.*--ignore-eos" "$tmp/help"
check "defaults listed" grep -q -- "--state fp32|bf16 .*(default fp32)" "$tmp/help"
m="$tmp/tiny-linear"
expect "stray argument named" 2 "unexpected argument 'extra'" "$bin" generate --model "$m" --prompt hi extra
expect "unknown option named" 2 "unknown or ambiguous option '--frob'" "$bin" generate --frob
expect "missing value" 2 "--model needs a value" "$bin" generate --model
expect "octal is not decimal" 2 "--threads: '010x' is not a decimal number from 0 to 256" "$bin" generate --model "$m" --prompt hi --threads 010x
expect "hex is not decimal" 2 "--max-tokens: '0x10' is not a decimal" "$bin" generate --model "$m" --prompt hi --max-tokens 0x10
expect "negative is refused" 2 "--seed: '-1' is not a decimal" "$bin" mkmodel --preset tiny-linear --out "$tmp/neg" --seed -1
expect "bad choice" 2 "--state: 'fp16' is not one of fp32\|bf16" "$bin" generate --model "$m" --prompt hi --state fp16
expect "flag with a value" 2 "--print-ids takes no value" "$bin" generate --model "$m" --prompt hi --print-ids=1
images=""
for i in $(seq 17); do images="$images --image x.png"; done
# shellcheck disable=SC2086
expect "at most 16 images" 2 "at most 16 images" "$bin" generate --model "$m" --prompt hi $images
expect "--system with --prompt-ids refused" 2 "--system applies to --prompt" "$bin" generate --model "$m" --prompt-ids "1 5" --system hi
expect "one prompt source" 2 "one of --prompt, --prompt-file or --prompt-ids" "$bin" generate --model "$m" --prompt hi --prompt-ids "1 5"
expect "inspect needs DIR" 2 "missing an argument \(usage: mmmamba inspect DIR\)" "$bin" inspect
expect "inspect takes one DIR" 2 "unexpected argument 'b'" "$bin" inspect a b
expect "bad log level" 2 "MMMAMBA_LOG=loud is not one of" env MMMAMBA_LOG=loud "$bin" inspect "$m"
expect "empty --prompt-ids" 1 "no token ids given" "$bin" generate --model "$m" --prompt-ids ""
expect "non-decimal --prompt-ids" 1 "\"0x5\" is not a token id" "$bin" generate --model "$m" --prompt-ids "1 0x5"
# --prompt-file and stdin give the same prompt as --prompt
"$bin" generate --model "$m" --prompt "Hello there" --max-tokens 4 --print-ids --dump-prompt-ids "$tmp/p1" > "$tmp/g1" 2>/dev/null
printf 'Hello there' > "$tmp/prompt.txt"
"$bin" generate --model "$m" --prompt-file "$tmp/prompt.txt" --max-tokens 4 --print-ids --dump-prompt-ids "$tmp/p2" > "$tmp/g2" 2>/dev/null
printf 'Hello there' | "$bin" generate --model "$m" --prompt-file - --max-tokens 4 --print-ids --dump-prompt-ids "$tmp/p3" > "$tmp/g3" 2>/dev/null
check "--prompt-file == --prompt" cmp "$tmp/p1" "$tmp/p2"
check "--prompt-file - (stdin) == --prompt" cmp "$tmp/p1" "$tmp/p3"
check "same output" cmp "$tmp/g1" "$tmp/g3"
# a prompt longer than one argument may be (128 KiB) through the file
awk 'BEGIN { for (i = 0; i < 40000; i++) printf "word " }' > "$tmp/long.txt"
expect "long --prompt-file" 0 "prefill: [0-9]{5,} tokens" "$bin" generate --model "$m" --prompt-file "$tmp/long.txt" --max-tokens 1 --print-ids --prefill-chunk 4096
# streamed text ends its line before the stats; the count is of tokens generated
"$bin" generate --model "$m" --prompt "Hello there" --max-tokens 16 --ignore-eos > "$tmp/both" 2>&1
check "stats on their own line" grep -q "^prefill: " "$tmp/both"
check "16 tokens generated" grep -q "generated 16 tokens (the first from the prefill); decode: 15 steps" "$tmp/both"
# a data: URL scheme in any case, as the library reads it
png1='iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=='
expect "DATA: scheme" 0 "^1 1 1$" "$bin" preprocess "DATA:image/png;base64,$png1" --out "$tmp/d.f32"
expect "Data: scheme in generate" 0 "^[0-9]+( [0-9]+)*$" "$bin" generate --model "$m" --prompt hi --image "Data:image/png;base64,$png1" --max-tokens 2 --print-ids
check "tiles written as 3x448x448 fp32" test "$(wc -c < "$tmp/d.f32")" -eq 2408448
echo "$pass passed, $fails failed"
[ "$fails" -eq 0 ]
