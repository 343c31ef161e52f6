#!/bin/sh
# chat-stream.sh: the same, streamed as server-sent events ("data: {...}"
# chunks as tokens are generated, the usage chunk, then "data: [DONE]").
# -N turns off curl's output buffering so tokens show as they arrive.
#   sh clients/curl/chat-stream.sh "Write a haiku about GPUs."
set -eu
. "$(dirname "$0")/env.sh"
prompt=${1:-Write a haiku about GPUs.}
api -N "$base/v1/chat/completions" -d "{
  \"model\": \"$model\",
  \"messages\": [{\"role\": \"user\", \"content\": $(json_string "$prompt")}],
  \"max_tokens\": ${MAX_TOKENS:-64},
  \"stream\": true,
  \"stream_options\": {\"include_usage\": true}
}"
