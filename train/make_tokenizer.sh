#!/bin/sh
# Trains train/tokenizer.model, the SentencePiece BPE tokenizer of the demo model, on every
# sentence the data generator can produce (questions, answers, captions, greetings) plus the
# template words and the default system prompt. Settings follow src/model/synthetic_tokenizer:
# BPE, byte fallback, identity normalisation, digits split; no dummy prefix (every text the model
# sees follows "\n" inside the chat template, which is never merged: spm_train reads lines, so
# "\n" has no piece and encodes as the byte <0x0A>). <unk>=0, <s>=1, </s>=2.
# Needs Debian's sentencepiece package (spm_train) and Pillow. The result is committed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$tmp/corpus.txt" <<'PY'
import random, sys
sys.path.insert(0, "train")
import shapes
lines = shapes.corpus_lines(random.Random(7), 4000)
sys_prompt = ("你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, "
              "是一个有用无害的人工智能助手。")
lines += ["system", "user", "assistant"] * 200 + [sys_prompt] * 200
with open(sys.argv[1], "w") as f:
    f.write("\n".join(lines) + "\n")
PY
spm_train --input="$tmp/corpus.txt" --model_prefix="$tmp/tok" --model_type=bpe \
  --vocab_size=600 --hard_vocab_limit=false --byte_fallback=true --character_coverage=1.0 \
  --normalization_rule_name=identity --add_dummy_prefix=false --remove_extra_whitespaces=false \
  --split_digits=true --allow_whitespace_only_pieces=true --max_sentence_length=100000 \
  --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=1 --minloglevel=2
# train/tokenizer.py (what training encodes with) must agree with spm_encode on every line
spm_encode --model="$tmp/tok.model" --output_format=id --input="$tmp/corpus.txt" > "$tmp/ids.txt"
/usr/bin/python3 - "$tmp/tok.model" "$tmp/corpus.txt" "$tmp/ids.txt" <<'PY'
import sys
sys.path.insert(0, "train")
import tokenizer
tk = tokenizer.Tokenizer(sys.argv[1])
lines = open(sys.argv[2], encoding="utf-8").read().split("\n")[:-1]
ids = open(sys.argv[3]).read().split("\n")[:-1]
bad = [l for l, i in zip(lines, ids) if tk.encode(l) != [int(x) for x in i.split()]]
if bad or len(lines) != len(ids):
    sys.exit("train/tokenizer.py disagrees with spm_encode on %d lines, e.g. %r" % (len(bad), bad[:1]))
print("train/tokenizer.py == spm_encode on %d corpus lines" % len(lines))
PY
cp "$tmp/tok.model" "$here/tokenizer.model"
echo "wrote $here/tokenizer.model ($(wc -c < "$here/tokenizer.model") bytes)"
