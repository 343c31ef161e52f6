#!/bin/sh
# check_reference_cuda.sh: the golden cases of tests/reference/ on the CUDA
# backend in fp32 mode (logits within 1e-4 of the PyTorch reference, greedy
# tokens identical, with and without chunked prefill). Skips (77) without a GPU.
set -eu
src=${top_srcdir:-.}
. "$src/tests/skip.sh"
bin="${top_builddir:-.}/mmmamba"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin" mkmodel --preset tiny-linear --seed 1 --out "$tmp/m" >/dev/null
if ! "$bin" generate --backend cuda-fp32 --model "$tmp/m" --prompt-ids "1 2 3" --max-tokens 1 \
    --print-ids >/dev/null 2>"$tmp/err"; then
  if grep -q "no CUDA" "$tmp/err"; then mm_skip_gpu "$(cat "$tmp/err")"; fi
  cat "$tmp/err"; exit 1
fi
MM_BACKEND=cuda-fp32 exec sh "$src/tests/engine/check_reference.sh"
