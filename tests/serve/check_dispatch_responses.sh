#!/bin/sh
# check_dispatch_responses.sh: /v1/responses continuations over two engines
# (devices 2; src/serve/dispatch.c places a continuation on the engine keeping
# its state), driven by tests/serve/dispatch_responses.py:
#   1. interleaved conversations: every continuation runs on the engine of its
#      previous turn (the x-mmmamba-engine header), resumes from its state and
#      answers exactly as a one-engine daemon; the same conversations on a
#      daemon without a state cache move between engines (the check can fail);
#   2. the engine holding a conversation is full: the continuation runs on the
#      other engine, resumed from the shared host tier;
#   3. the engine holding a conversation faults: the continuation runs on the
#      other engine, rebuilt from the stored ids (its state died with the
#      engine) or, with state_cache_gpu no, resumed from the host tier.
set -eu
top_builddir=${top_builddir:-.}
top_srcdir=${top_srcdir:-.}
. "$top_srcdir/tests/skip.sh"
. "$top_srcdir/tests/daemon.sh"
bin="$top_builddir/mmmambad"
tool="$top_builddir/mmmamba"
drive="$top_srcdir/tests/serve/dispatch_responses.py"
command -v python3 >/dev/null 2>&1 || mm_skip "python3 missing"
mm_scratch
fails=0
"$tool" mkmodel --preset tiny-linear --seed 3 --out "$tmp/m" >/dev/null

# start NAME FLAGS...: a daemon on a free port; its port is in $tmp/NAME.port
start() {
  name=$1
  shift
  mm_daemon "$name" "$bin" --model "$tmp/m" --served-model-name m --backend cpu --threads 1 \
    --http-threads 4 --max-model-len 65536 "$@"
  echo "$mm_port" >"$tmp/$name.port"
}
p() { cat "$tmp/$1.port"; }
drive() { python3 "$drive" "$@" || fails=$((fails + 1)); }

start ref --devices 1
start two --devices 2
start nocache --devices 2 --state-cache-bytes 0
start full --devices 2 --max-seqs 2
MMMAMBA_FAIL_ENGINE=0:30 start fault --devices 2
MMMAMBA_FAIL_ENGINE=0:30 start faulthost --devices 2 --state-cache-gpu no

drive route "$(p two)" "$(p ref)"
drive control "$(p nocache)"
drive full "$(p full)" "$(p ref)"
drive failed "$(p fault)" "$(p ref)" rebuilt
drive failed "$(p faulthost)" "$(p ref)" resumed

[ "$fails" -eq 0 ] || { for f in "$tmp"/*.log; do tail -n 5 "$f"; done; exit 1; }
echo "dispatch responses checks passed"
