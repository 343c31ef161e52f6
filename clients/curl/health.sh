#!/bin/sh
# health.sh: readiness (GET /health: 200 serving, 503 loading or draining;
# it never needs the key) and the models the server offers.
set -eu
. "$(dirname "$0")/env.sh"
curl -sS -o /dev/null -w "health: %{http_code}\n" "$base/health"
api "$base/v1/models"
echo
