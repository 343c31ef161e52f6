# cases.sh: the golden cases shared by make_golden.sh (writes them with the
# PyTorch reference) and tests/engine/check_reference.sh (checks the C engine
# against them). Sourced, not run. Each case: name, preset, extra mkmodel
# flags, prompt kind (text | image: 2 tiles). Checkpoints are regenerated with
# `mmmamba mkmodel --seed 21`, so only the small outputs are committed.
CASES="
linear-text|tiny-linear||text
linear-image|tiny-linear||image
linear-post-norm-image|tiny-linear|--pixel-shuffle-loc post --normalize-encoder-output 1|image
hybrid-text|tiny-hybrid||text
hybrid-image|tiny-hybrid||image
hybrid-pre-image|tiny-hybrid|--pixel-shuffle-loc pre --normalize-encoder-output 0|image
teacher-text|tiny-teacher||text
teacher-image|tiny-teacher||image
teacher-post-image|tiny-teacher|--pixel-shuffle-loc post|image
"
GOLDEN_SEED=21
GOLDEN_GREEDY=8

# Prompt ids for a kind; the tiny presets put <img> at 1030, </img> 1031,
# <IMG_CONTEXT> 1032, <|im_start|> 1029, <|im_end|> 1028.
case_ids() {
  text="1 1029 17 40 91 388 12 7 1000 555 13 1028 1029 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106"
  if [ "$1" = image ]; then
    img=$(awk 'BEGIN { for (i = 0; i < 512; i++) printf "%s1032", (i ? " " : "") }')
    echo "1 1029 17 40 1030 $img 1031 91 388 12 7 1000 555 13 1028 1029 60 61"
  else
    echo "$text"
  fi
}

# Writes 2 deterministic tiles (a formula, not an RNG, so every numpy agrees).
case_tiles() {
  "${PYTHON:-/usr/bin/python3}" -c '
import sys, numpy as np
i = np.arange(2 * 3 * 448 * 448, dtype=np.float64)
(np.sin(0.37 * i) * np.cos(0.011 * i) * 2.0).astype("<f4").tofile(sys.argv[1])
' "$1"
}
