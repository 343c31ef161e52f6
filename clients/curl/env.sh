# env.sh: settings shared by the curl examples (sourced by each).
#   MMMAMBA_BASE_URL  server root (default http://127.0.0.1:8000)
#   MMMAMBA_API_KEY   sent as "Authorization: Bearer ..." when set
#   MMMAMBA_MODEL     model name (default: the first of GET /v1/models)
base=${MMMAMBA_BASE_URL:-http://127.0.0.1:8000}
base=${base%/}
base=${base%/v1}

# api ARGS...: curl with the common options: quiet but showing errors, exit
# non-zero on an HTTP error (printing the server's error object), JSON body,
# and the key when there is one.
api() {
  if [ -n "${MMMAMBA_API_KEY:-}" ]; then
    curl -sS --fail-with-body -H "Content-Type: application/json" \
      -H "Authorization: Bearer $MMMAMBA_API_KEY" "$@"
  else
    curl -sS --fail-with-body -H "Content-Type: application/json" "$@"
  fi
}

# json_string TEXT: TEXT as a JSON string literal (quotes, backslashes, control characters escaped).
json_string() {
  printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' -e 's/\r/\\r/g' |
    awk 'BEGIN { ORS = ""; print "\"" } { if (NR > 1) print "\\n"; print } END { print "\"" }'
}

model=${MMMAMBA_MODEL:-}
if [ -z "$model" ]; then
  models=$(api "$base/v1/models") || { printf '%s\n' "$models" >&2; exit 1; }
  model=$(printf '%s' "$models" | grep -o '"id" *: *"[^"]*"' | head -n 1 | sed 's/.*: *"\(.*\)"/\1/')
  [ -n "$model" ] || { echo "no model listed at $base/v1/models; set MMMAMBA_MODEL" >&2; exit 1; }
fi
