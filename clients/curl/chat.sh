#!/bin/sh
# chat.sh: one chat completion, the whole answer as JSON.
#   MMMAMBA_BASE_URL=http://127.0.0.1:8000 sh clients/curl/chat.sh "What is a state-space model?"
set -eu
. "$(dirname "$0")/env.sh"
prompt=${1:-Hello! Who are you?}
api "$base/v1/chat/completions" -d "{
  \"model\": \"$model\",
  \"messages\": [
    {\"role\": \"system\", \"content\": \"You are a helpful assistant.\"},
    {\"role\": \"user\", \"content\": $(json_string "$prompt")}
  ],
  \"max_tokens\": ${MAX_TOKENS:-64},
  \"temperature\": 0
}"
echo
