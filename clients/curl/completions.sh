#!/bin/sh
# completions.sh: raw completions (no chat template), first from text, then
# from token ids (what the load generator sends for exact prompt lengths),
# streamed.
#   sh clients/curl/completions.sh "Once upon a time"
set -eu
. "$(dirname "$0")/env.sh"
prompt=${1:-Once upon a time}
api "$base/v1/completions" -d "{
  \"model\": \"$model\",
  \"prompt\": $(json_string "$prompt"),
  \"max_tokens\": ${MAX_TOKENS:-32},
  \"temperature\": 0
}"
echo
api -N "$base/v1/completions" -d "{
  \"model\": \"$model\",
  \"prompt\": [1, 1029, 17, 40, 91, 388],
  \"max_tokens\": ${MAX_TOKENS:-32},
  \"ignore_eos\": true,
  \"stream\": true
}"
