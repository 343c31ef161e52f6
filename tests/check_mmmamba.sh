#!/bin/sh
# check_mmmamba.sh: drives the built `mmmamba` tool end to end: mkmodel and
# inspect for every tiny preset (single file and sharded), generate and
# tokenize, the CLI's manners (help, options, numbers, messages), and every
# error path. Each case checks the exit code and what was printed (expect),
# not the exit code alone.
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
  expect "mkmodel $p" 0 "^wrote $tmp/$p \(preset $p, seed 5, 1 shard\)$" "$bin" mkmodel --preset $p --seed 5 --out "$tmp/$p"
  expect "inspect $p" 0 "^model: $tmp/$p$" "$bin" inspect "$tmp/$p"
  expect "mkmodel $p sharded" 0 "^wrote $tmp/$p-sh \(preset $p, seed 5, 2 shards\)$" "$bin" mkmodel --preset $p --seed 5 --shards 2 --out "$tmp/$p-sh"
  expect "inspect $p sharded" 0 "^tensors: [0-9]+ stored" "$bin" inspect "$tmp/$p-sh"
  check "index present" test -f "$tmp/$p-sh/model.safetensors.index.json"
done
# a checkpoint never lands on an old one (a stale index would win over the new weights)
"$bin" generate --model "$tmp/tiny-linear-sh" --prompt-ids "1 5 6" --print-ids > "$tmp/ids-before" 2>/dev/null
expect "mkmodel refuses a non-empty directory" 1 "tiny-linear-sh is not empty \(it holds .*\): a checkpoint is written into a new or empty directory" \
  "$bin" mkmodel --preset tiny-linear --seed 2 --out "$tmp/tiny-linear-sh"
"$bin" generate --model "$tmp/tiny-linear-sh" --prompt-ids "1 5 6" --print-ids > "$tmp/ids-after" 2>/dev/null
check "the refused write left the model alone" cmp "$tmp/ids-before" "$tmp/ids-after"
cp "$tmp/tiny-linear/model.safetensors" "$tmp/tiny-hybrid-sh/"
expect "both a single file and an index: warned" 0 "holds both model.safetensors and model.safetensors.index.json" \
  "$bin" inspect "$tmp/tiny-hybrid-sh"
rm "$tmp/tiny-hybrid-sh/model.safetensors"
expect "shards beyond the tensor count refused" 1 "999 shards for [0-9]+ tensors" \
  "$bin" mkmodel --preset tiny-linear --shards 999 --out "$tmp/many"
"$bin" mkmodel --preset tiny-linear --shards 80 --out "$tmp/s80" > /dev/null
check "80 shards, each named by the index" test "$(ls "$tmp/s80" | grep -c '^model-')" -eq \
  "$(grep -o 'model-[0-9]*-of-00080' "$tmp/s80/model.safetensors.index.json" | sort -u | wc -l)"
"$bin" inspect "$tmp/tiny-hybrid" > "$tmp/insp"
check "inspect says hybrid" grep -q "layout: hybrid (3 mamba2, 3 mha layers)" "$tmp/insp"
check "inspect says post" grep -q "pixel shuffle post" "$tmp/insp"
check "inspect counts params" grep -q "parameters 584328" "$tmp/insp"
check "mkmodel overrides" "$bin" mkmodel --preset tiny-linear --pixel-shuffle-loc post \
  --normalize-encoder-output 1 --image-size 112 --out "$tmp/ov"
"$bin" inspect "$tmp/ov" > "$tmp/insp"
check "override applied" grep -q "position grid 8x8, pixel shuffle post.*normalize_encoder_output true" "$tmp/insp"
# generate: chat prompt through the template, ids, stop token, chunked == whole
expect "generate --prompt" 0 "^prefill: [0-9]+ tokens in .*generated [1-8] tokens" "$bin" generate --model "$tmp/tiny-linear" --prompt "Hello there" --max-tokens 8
expect "--max-tokens 010 is ten" 0 "generated 10 tokens" "$bin" generate --model "$tmp/tiny-linear" --prompt "Hello there" --max-tokens 010 --ignore-eos
"$bin" generate --model "$tmp/tiny-linear" --prompt "Hello there" --max-tokens 8 --print-ids > "$tmp/a" 2>/dev/null
"$bin" generate --model "$tmp/tiny-linear" --prompt "Hello there" --max-tokens 8 --print-ids --prefill-chunk 5 > "$tmp/b" 2>/dev/null
check "chunked prefill gives the same ids" cmp "$tmp/a" "$tmp/b"
check "ids line" grep -Eq '^[0-9]+( [0-9]+)*$' "$tmp/a"
"$bin" tokenize --model "$tmp/tiny-linear" "Hi" > "$tmp/tok"
check "tokenize: ids then pieces" test "$(sed -n 2p "$tmp/tok")" = "<s> ▁H i"
expect "generate on ids from tokenize" 0 "^[0-9]+ [0-9]+$" "$bin" generate --model "$tmp/tiny-linear" --prompt-ids "$(head -1 "$tmp/tok")" --max-tokens 2 --print-ids
expect "out-of-vocabulary id" 1 "^mmmamba: token id 99999 outside the vocabulary \(0..1038\)$" "$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1 99999"
expect "stray image tokens" 1 "image-context run at position 1 has 2 tokens, not a whole number of tiles" "$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1 1032 1032"
# the tiles given must match the prompt's image runs (the engine trusts the buffer)
img512=$(awk 'BEGIN { for (i = 0; i < 512; i++) printf " 1032" }')
head -c 2408448 /dev/zero > "$tmp/one.tile"
expect "tile count mismatch" 1 "512 image-context tokens but 1 tiles were given \(256 tokens per tile\)" \
  "$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1$img512 5" --tiles "$tmp/one.tile" --num-tiles 1
expect "absurd --prefill-chunk" 2 "--prefill-chunk: '4611686018427387904' is not a decimal number from 0 to 524288" \
  "$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1 2" --prefill-chunk 4611686018427387904
expect "--tiles without --num-tiles" 2 "--tiles and --num-tiles go together" \
  "$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1 2" --tiles "$tmp/one.tile"
expect "--tiles with --prompt" 2 "--tiles goes with --prompt-ids" \
  "$bin" generate --model "$tmp/tiny-linear" --prompt hi --tiles "$tmp/one.tile" --num-tiles 1
cat "$tmp/one.tile" "$tmp/one.tile" > "$tmp/two.tile"
"$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1 5$img512 7 8" --tiles "$tmp/two.tile" --num-tiles 2 --max-tokens 4 --print-ids > "$tmp/w" 2>/dev/null
"$bin" generate --model "$tmp/tiny-linear" --prompt-ids "1 5$img512 7 8" --tiles "$tmp/two.tile" --num-tiles 2 --max-tokens 4 --print-ids --prefill-chunk 100 > "$tmp/c" 2>/dev/null
check "image prompt: chunks at tile boundaries give the same ids" cmp "$tmp/w" "$tmp/c"
check "image prompt ids" grep -Eq '^[0-9]+ [0-9]+ [0-9]+ [0-9]+$' "$tmp/w"
m="$tmp/tiny-linear"
"$bin" inspect "$m" > "$tmp/insp"
# the tokenizer is part of the checkpoint: loaded, checked against the model, reported
check "inspect reports the tokenizer" grep -q "^tokenizer: 1039 ids (bos 1, eos 2, <|im_end|> 1028), template internlm2-chat" "$tmp/insp"
cp -r "$m" "$tmp/notok"; rm "$tmp/notok/tokenizer.model"
expect "generate without tokenizer.model" 1 "notok/tokenizer.model: No such file" "$bin" generate --model "$tmp/notok" --prompt-ids "1 5 6"
expect "inspect without tokenizer.model" 1 "notok/tokenizer.model: No such file" "$bin" inspect "$tmp/notok"
cp -r "$m" "$tmp/garbtok"; echo "not a model" > "$tmp/garbtok/tokenizer.model"
expect "inspect with a garbage tokenizer.model" 1 "garbtok/tokenizer.model" "$bin" inspect "$tmp/garbtok"
cp -r "$m" "$tmp/noadded"; rm "$tmp/noadded/added_tokens.json" "$tmp/noadded/tokenizer_config.json" "$tmp/noadded/special_tokens_map.json"
set +e; "$bin" generate --model "$tmp/noadded" --prompt-ids "1 5 6" --max-tokens 300 --ignore-eos > "$tmp/o" 2> "$tmp/err"; rc=$?; set -e
check "no template tokens: refused at load" test "$rc" -eq 1
check "... naming the missing token" grep -q "the tokenizer has no <|im" "$tmp/err"
check "... before any text" test ! -s "$tmp/o"
cp -r "$m" "$tmp/bigid"; echo '{"<x>": 16777215}' > "$tmp/bigid/added_tokens.json"
expect "added id past the model's vocabulary" 1 "added_tokens.json: added token \"<x>\" has id 16777215, outside the model's vocabulary \(0..1038\)" \
  "$bin" tokenize --model "$tmp/bigid" hi
# a model whose vocabulary is padded past the tokenizer: the extra ids decode to nothing
cp -r "$tmp/noadded" "$tmp/padded"
echo '{"<|im_end|>": 1028, "<|im_start|>": 1029, "<img>": 1030, "</img>": 1031, "<IMG_CONTEXT>": 1032}' > "$tmp/padded/added_tokens.json"
echo "107 1035 1038 108" > "$tmp/pad.ids"
expect "padded ids decode to nothing" 0 "^hi$" "$bin" tokenize --model "$tmp/padded" --decode --file "$tmp/pad.ids"
expect "generate on a padded vocabulary" 0 "generated 300 tokens" "$bin" generate --model "$tmp/padded" --prompt-ids "1 5 6" --max-tokens 300 --ignore-eos
# raw tiles: the file's size is checked before anything is allocated
expect "--num-tiles past the file" 1 "--tiles: .*one.tile: holds 2408448 bytes, expected 9865003008" \
  "$bin" generate --model "$m" --prompt-ids "1 2" --tiles "$tmp/one.tile" --num-tiles 4096
# logits: vocab_size little-endian fp32 values
"$bin" generate --model "$m" --prompt-ids "1 5 6" --max-tokens 1 --dump-logits "$tmp/logits.f32" > /dev/null 2>&1
check "logits file size" test "$(wc -c < "$tmp/logits.f32")" -eq $((1039 * 4))
# hostile tokenizer files and image paths fail cleanly
cp -r "$tmp/tiny-linear" "$tmp/badtok"
echo '{"<x>": 1e300}' > "$tmp/badtok/added_tokens.json"
expect "1e300 token id" 1 'added_tokens.json: "<x>" is not an integer id' "$bin" tokenize --model "$tmp/badtok" hi
mkfifo "$tmp/fifo"
expect "FIFO refused, not waited on" 1 "fifo.*not a regular file" timeout 10 "$bin" preprocess "$tmp/fifo" --out "$tmp/o"
# error paths: non-zero exit and a message naming the problem
expect "bad preset" 1 'unknown preset "nope"' "$bin" mkmodel --preset nope --out "$tmp/x"
expect "missing model" 1 "^mmmamba: $tmp/none/config.json: No such file or directory$" "$bin" inspect "$tmp/none"
rm "$tmp/tiny-linear-sh/model-00002-of-00002.safetensors"
expect "missing shard" 1 "tiny-linear-sh/model-00002-of-00002.safetensors" "$bin" inspect "$tmp/tiny-linear-sh"
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
expect "one prompt source" 2 "one of --prompt, --prompt-file, --prompt-ids or --prompt-ids-file" "$bin" generate --model "$m" --prompt hi --prompt-ids "1 5"
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
# generate through the scheduler: a file of id prompts, concurrently == one at a time
for p in tiny-linear tiny-hybrid; do
  : > "$tmp/ids.txt"
  for i in $(seq 9); do
    line="1"; for j in $(seq $((3 * i))); do line="$line $(( (i * 31 + j * 17) % 1000 + 3 ))"; done
    echo "$line" >> "$tmp/ids.txt"
  done
  "$bin" generate --model "$tmp/$p" --prompt-ids-file "$tmp/ids.txt" --max-tokens 12 --ignore-eos --print-ids > "$tmp/seq" 2>/dev/null
  "$bin" generate --model "$tmp/$p" --prompt-ids-file "$tmp/ids.txt" --max-tokens 12 --ignore-eos --print-ids --concurrency 4 --prefill-chunk 8 > "$tmp/conc" 2>"$tmp/stats"
  check "$p: 9 prompts, concurrency 4 == one at a time" cmp "$tmp/seq" "$tmp/conc"
  check "$p: 9 lines of 12 ids" test "$(grep -Ec '^[0-9]+( [0-9]+){11}$' "$tmp/conc")" -eq 9
  check "$p: throughput printed" grep -Eq "^throughput: [0-9.]+ requests/s" "$tmp/stats"
  check "$p: TTFT percentiles printed" grep -Eq "^TTFT +mean .* p50 .* p90 .* p99 " "$tmp/stats"
done
expect "--requests cycles the prompts" 0 "^20 requests \(concurrency 3, n 1\)" "$bin" generate --model "$m" --prompt-ids-file "$tmp/ids.txt" --requests 20 --concurrency 3 --max-tokens 2
expect "--concurrency needs a file" 2 "go with --prompt-ids-file" "$bin" generate --model "$m" --prompt hi --concurrency 2
# sampling flags: seeded runs repeat, n choices, stop strings are not printed
"$bin" generate --model "$m" --prompt-ids "1 40 91" --max-tokens 10 --ignore-eos --print-ids --temperature 0.9 --top-p 0.9 --seed 7 > "$tmp/s1" 2>/dev/null
"$bin" generate --model "$m" --prompt-ids "1 40 91" --max-tokens 10 --ignore-eos --print-ids --temperature 0.9 --top-p 0.9 --seed 7 > "$tmp/s2" 2>/dev/null
check "seeded sampling repeats" cmp "$tmp/s1" "$tmp/s2"
expect "n = 3 prints 3 lines of ids" 0 "^[0-9]+( [0-9]+){9}$" "$bin" generate --model "$m" --prompt-ids "1 40 91" --max-tokens 10 --ignore-eos --print-ids --n 3 --temperature 1 --seed 3
check "3 choices" test "$(grep -Ec '^[0-9]+( [0-9]+){9}$' "$tmp/out")" -eq 3
expect "bad float" 2 "--temperature: 'hot' is not a number" "$bin" generate --model "$m" --prompt hi --temperature hot
"$bin" generate --model "$m" --prompt "Hello there" --max-tokens 40 --ignore-eos > "$tmp/free" 2>/dev/null
stop=$(head -c 12 "$tmp/free" | tail -c 2)
if [ "$(printf '%s' "$stop" | wc -c)" -eq 2 ]; then
  "$bin" generate --model "$m" --prompt "Hello there" --max-tokens 40 --ignore-eos --stop "$stop" > "$tmp/stopped" 2>/dev/null
  check "stop string not printed" sh -c "! grep -qF -- \"$stop\" \"$tmp/stopped\""
fi
echo "$pass passed, $fails failed"
[ "$fails" -eq 0 ]
