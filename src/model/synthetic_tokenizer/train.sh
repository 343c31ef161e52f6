#!/bin/sh
# Regenerates tokenizer.model, the SentencePiece BPE model that `mmmamba mkmodel`
# ships with synthetic checkpoints (docs/model.md §6), from corpus.txt in this folder.
# Needs Debian's `sentencepiece` package (spm_train). Settings follow InternLM2's
# tokenizer: BPE, byte fallback, identity normalisation, dummy prefix, digits split,
# whitespace kept as is; <unk>=0, <s>=1, </s>=2.
# The result is committed; mkmodel embeds it (synthetic_tokenizer.S), so a rebuild
# picks up a regenerated model.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
spm_train --input="$here/corpus.txt" --model_prefix="$tmp/tok" --model_type=bpe \
  --vocab_size=1024 --hard_vocab_limit=false --byte_fallback=true --character_coverage=1.0 \
  --normalization_rule_name=identity --add_dummy_prefix=true --remove_extra_whitespaces=false \
  --split_digits=true --allow_whitespace_only_pieces=true --max_sentence_length=100000 \
  --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 --num_threads=1 --minloglevel=2
cp "$tmp/tok.model" "$here/tokenizer.model"
echo "wrote $here/tokenizer.model ($(wc -c < "$here/tokenizer.model") bytes)"
