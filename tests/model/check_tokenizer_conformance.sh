#!/bin/sh
# check_tokenizer_conformance.sh: mmmamba's tokenizer against SentencePiece
# itself. Trains BPE models (byte fallback) with spm_train under several
# normalizer settings on tests/data/tokenizer_train.txt, then for every line
# of tests/data/tokenizer_test.txt (thousands of lines: English, Chinese,
# Japanese, emoji, code, whitespace runs, long words, NFKC-sensitive and
# invalid UTF-8) requires
#   mmmamba tokenize --tokenizer M --no-bos --lines  ==  spm_encode --output_format=id
#   mmmamba tokenize --tokenizer M --decode          ==  spm_decode --input_format=id
# with zero mismatches; also for the shipped synthetic tokenizer. Finally it
# times encoding of the whole test file (~100K+ tokens) as one text.
# Skips (exit 77; a failure in CI, tests/skip.sh) only when SentencePiece's
# command-line tools are missing.
set -u
srcdir=${top_srcdir:-.}
builddir=${top_builddir:-.}
mm="$builddir/mmmamba"
. "$srcdir/tests/skip.sh"
train="$srcdir/tests/data/tokenizer_train.txt"
for tool in spm_train spm_encode spm_decode; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    mm_skip "$tool not found (Debian package sentencepiece)"
  fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Add 3000 random lines from a pool of tricky fragments (octal escapes for
# portable awk): U+3000 and other spaces NFKC maps to " ", half-width kana
# with combining voiced marks (multi-character NFKC rules), U+2581 itself,
# digits, emoji, invalid and truncated UTF-8, control-piece spellings.
awk 'BEGIN {
  srand(7);
  n = split("a|ab|the| |  |\t|\343\200\200|\302\240|\342\200\202|\342\226\201|\357\275\266|\357\276\236|\357\276\237|\357\275\261|\342\221\240|\357\254\201|1|23|456|\345\245\275|\344\275\240|\343\201\202|\360\237\230\200|\360\237\246\200|\303\251|e\314\201|\377|\344\270|\300\257|\355\240\200|<s>|</s>|<unk>|<0x41>|x|\r|.|,|\357\274\241", pool, "|");
  for (l = 0; l < 3000; l++) {
    k = int(rand() * 12); s = "";
    for (i = 0; i < k; i++) s = s pool[1 + int(rand() * n)];
    print s;
  }
}' > "$tmp/fuzz.txt"
cat "$srcdir/tests/data/tokenizer_test.txt" "$tmp/fuzz.txt" > "$tmp/all.txt"
test="$tmp/all.txt"
lines=$(wc -l < "$test")
fail=0
models=0

# compare NAME MODEL: encode and decode every test line both ways.
compare() {
  name=$1 model=$2
  models=$((models + 1))
  spm_encode --model="$model" --output_format=id < "$test" > "$tmp/$name.spm" || { echo "FAIL $name: spm_encode"; fail=1; return; }
  "$mm" tokenize --tokenizer "$model" --no-bos --lines --file "$test" > "$tmp/$name.mm" || { echo "FAIL $name: mmmamba tokenize"; fail=1; return; }
  enc=$(paste -d '\t' "$tmp/$name.spm" "$tmp/$name.mm" | awk -F '\t' '$1 != $2' | wc -l)
  [ "$(wc -l < "$tmp/$name.mm")" -eq "$lines" ] || enc=$lines
  spm_decode --model="$model" --input_format=id < "$tmp/$name.spm" > "$tmp/$name.spm.dec"
  "$mm" tokenize --tokenizer "$model" --decode --file "$tmp/$name.spm" > "$tmp/$name.mm.dec" || { echo "FAIL $name: mmmamba decode"; fail=1; return; }
  if cmp -s "$tmp/$name.spm.dec" "$tmp/$name.mm.dec"; then dec=0; else
    dec=$(diff "$tmp/$name.spm.dec" "$tmp/$name.mm.dec" | grep -c '^<'); [ "$dec" -gt 0 ] || dec=1; fi
  echo "$name: $lines lines, encode mismatches $enc, decode mismatches $dec"
  if [ "$enc" -ne 0 ] || [ "$dec" -ne 0 ]; then
    fail=1
    paste -d '\n' "$tmp/$name.spm" "$tmp/$name.mm" | awk 'NR % 2 == 1 { a = $0; next } a != $0 { print "  spm: " a; print "  mm:  " $0; if (++k == 3) exit }'
  fi
}

# train NAME ARGS...: one spm_train run (small vocabularies keep this fast).
trainm() {
  name=$1; shift
  if ! spm_train --input="$train" --model_prefix="$tmp/$name" --model_type=bpe --byte_fallback=true \
      --max_sentence_length=100000 --num_threads=2 --minloglevel=2 "$@" > "$tmp/$name.log" 2>&1; then
    echo "FAIL $name: spm_train"; cat "$tmp/$name.log"; fail=1; return 1
  fi
}

#           name                 normalizer            dummy  rmws   split digits  other
trainm id_dummy_keepws   --normalization_rule_name=identity --add_dummy_prefix=true --remove_extra_whitespaces=false --split_digits=true --allow_whitespace_only_pieces=true --vocab_size=3000 && compare id_dummy_keepws "$tmp/id_dummy_keepws.model"
trainm id_nodummy_rmws   --normalization_rule_name=identity --add_dummy_prefix=false --remove_extra_whitespaces=true --split_digits=false --vocab_size=2000 && compare id_nodummy_rmws "$tmp/id_nodummy_rmws.model"
trainm nfkc_default      --normalization_rule_name=nmt_nfkc --add_dummy_prefix=true --remove_extra_whitespaces=true --split_digits=false --vocab_size=3000 && compare nfkc_default "$tmp/nfkc_default.model"
trainm nfkc_nodummy_keepws_digits_user --normalization_rule_name=nmt_nfkc --add_dummy_prefix=false --remove_extra_whitespaces=false --split_digits=true --allow_whitespace_only_pieces=true --user_defined_symbols='<|im_end|>,▁▁▁▁,<tab>,ＡＢ' --vocab_size=2500 && compare nfkc_nodummy_keepws_digits_user "$tmp/nfkc_nodummy_keepws_digits_user.model"
trainm nfkc_cf_dummy_keepws --normalization_rule_name=nmt_nfkc_cf --add_dummy_prefix=true --remove_extra_whitespaces=false --split_digits=true --vocab_size=2000 && compare nfkc_cf_dummy_keepws "$tmp/nfkc_cf_dummy_keepws.model"
trainm id_small_bytes    --normalization_rule_name=identity --add_dummy_prefix=true --remove_extra_whitespaces=true --split_digits=true --character_coverage=0.98 --hard_vocab_limit=false --vocab_size=1400 && compare id_small_bytes "$tmp/id_small_bytes.model"
trainm id_ws_suffix      --normalization_rule_name=identity --add_dummy_prefix=true --remove_extra_whitespaces=false --treat_whitespace_as_suffix=true --vocab_size=2000 && compare id_ws_suffix "$tmp/id_ws_suffix.model"
trainm nfkc_nobytes --byte_fallback=false --normalization_rule_name=nmt_nfkc --character_coverage=0.98 --hard_vocab_limit=false --vocab_size=1000 && compare nfkc_nobytes "$tmp/nfkc_nobytes.model"
compare synthetic "$srcdir/src/model/synthetic_tokenizer/tokenizer.model"

echo "conformance: $lines strings x $models models"

# The CLI's stable output format on a checkpoint directory (added tokens matched,
# BOS prepended): line 1 ids, line 2 pieces.
"$mm" mkmodel --preset tiny-linear --out "$tmp/ckpt" > /dev/null || fail=1
"$mm" tokenize --model "$tmp/ckpt" "$(printf '<|im_start|>user\nhi<|im_end|>')" > "$tmp/cli.out" || fail=1
printf '1 1029 628 13 718 716 1028\n<s> <|im_start|> \342\226\201user <0x0A> h i <|im_end|>\n' > "$tmp/cli.want"
if cmp -s "$tmp/cli.out" "$tmp/cli.want"; then echo "tokenize --model output format: ok"; else
  echo "FAIL tokenize --model output:"; cat "$tmp/cli.out"; fail=1; fi
# speed: the whole test file as one text (best of 5 runs)
echo "speed (whole test file as one text, best of 5):"
printf '  synthetic (identity, 1024 pieces): '
"$mm" tokenize --tokenizer "$srcdir/src/model/synthetic_tokenizer/tokenizer.model" --bench --file "$srcdir/tests/data/tokenizer_test.txt" || fail=1
if [ -f "$tmp/nfkc_default.model" ]; then
  printf '  nfkc_default (nmt_nfkc charsmap, 3000 pieces): '
  "$mm" tokenize --tokenizer "$tmp/nfkc_default.model" --bench --file "$srcdir/tests/data/tokenizer_test.txt" || fail=1
fi
[ "$fail" -eq 0 ] && echo PASS || echo FAIL
exit "$fail"
