#!/bin/sh
# chat-image.sh: a question about an image, sent inline as a data: URL.
# The body goes through stdin (-d @-): a base64 image is too long for one
# command-line argument.
#   sh clients/curl/chat-image.sh cat.jpg "What is in this picture?"
set -eu
. "$(dirname "$0")/env.sh"
image=${1:?usage: chat-image.sh IMAGE [QUESTION]}
question=${2:-What is in this image?}
case "$image" in
  *.jpg|*.jpeg|*.JPG|*.JPEG) mime=image/jpeg ;;
  *.gif) mime=image/gif ;;
  *.webp) mime=image/webp ;;
  *) mime=image/png ;;
esac
{
  printf '{"model": "%s", "max_tokens": %s, "messages": [{"role": "user", "content": [' \
    "$model" "${MAX_TOKENS:-64}"
  printf '{"type": "image_url", "image_url": {"url": "data:%s;base64,' "$mime"
  base64 < "$image" | tr -d '\n'
  printf '"}}, {"type": "text", "text": %s}]}]}' "$(json_string "$question")"
} | api "$base/v1/chat/completions" -d @-
echo
