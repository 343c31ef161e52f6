#!/bin/sh
# check_loadgen.sh: mmmamba-loadgen end to end against the fake OpenAI server
# (tests/clients/fake_openai.py), whose token timing is known: the measured
# TTFT, ITL, TPOT and E2EL must match it within a tolerance loose enough for
# a loaded 2-core CI machine; plus arrival rate, concurrency limits, error
# classes, images, API keys and a few hundred simultaneous streams.
set -eu
. "${top_srcdir:-.}/tests/clients/lib.sh"
lg="$build/mmmamba-loadgen"
command -v "$py" >/dev/null || mm_skip "no $py"
[ -x "$build/mmmamba-loadgen" ] || mm_skip "mmmamba-loadgen not built (no libcurl)"

# 1. Timing: TTFT 200 ms, then one token every 25 ms.
start_fake timing --ttft-ms 200 --itl-ms 25
check "timing run" "$lg" --base-url "http://127.0.0.1:$port" --num-prompts 24 \
  --max-concurrency 8 --random-input-len 64 --random-output-len 12 --ignore-eos \
  --save-detailed --result-filename "$tmp/t.json" --disable-tqdm
check "timing: counts" json_ok "$tmp/t.json" \
  'r["completed"] == 24 and r["failed"] == 0 and r["total_output_tokens"] == 288 and r["total_input_tokens"] == 24 * 64'
check "timing: TTFT ~200 ms" json_ok "$tmp/t.json" '198 <= r["mean_ttft_ms"] <= 320 and r["median_ttft_ms"] >= 198'
check "timing: ITL ~25 ms" json_ok "$tmp/t.json" '24 <= r["mean_itl_ms"] <= 33 and 24 <= r["median_itl_ms"] <= 33'
check "timing: TPOT ~25 ms" json_ok "$tmp/t.json" '24 <= r["mean_tpot_ms"] <= 35'
check "timing: E2EL ~475 ms" json_ok "$tmp/t.json" '470 <= r["mean_e2el_ms"] <= 650'
check "timing: percentiles ordered" json_ok "$tmp/t.json" \
  'r["median_ttft_ms"] <= r["p90_ttft_ms"] <= r["p99_ttft_ms"] and r["std_itl_ms"] >= 0'
check "timing: per-request arrays" json_ok "$tmp/t.json" \
  'len(r["itls"]) == 24 and all(len(x) == 11 for x in r["itls"]) and r["output_lens"] == [12] * 24'
check "timing: concurrency held" json_ok "$tmp/t.json" \
  'r["max_concurrent_requests"] <= 8 and r["max_concurrency"] == 8 and r["request_rate"] == "inf"'
check "goodput run" "$lg" --base-url "http://127.0.0.1:$port" --num-prompts 8 --max-concurrency 8 \
  --random-input-len 8 --random-output-len 4 --ignore-eos --goodput ttft:1000 tpot:100 \
  --result-filename "$tmp/g.json" --disable-tqdm
check "goodput: all within the SLOs" json_ok "$tmp/g.json" \
  'abs(r["request_goodput"] - r["request_throughput"]) < 1e-9 and r["request_goodput"] > 0'
check "goodput run, tight SLO" "$lg" --base-url "http://127.0.0.1:$port" --num-prompts 4 \
  --random-input-len 8 --random-output-len 4 --goodput ttft:50 --result-filename "$tmp/g2.json" --disable-tqdm
check "goodput: none within 50 ms TTFT" json_ok "$tmp/g2.json" 'r["request_goodput"] == 0'
check "timing: model from /v1/models" json_ok "$tmp/t.json" 'r["model_id"] == "mmmamba-fake"'

# 2. Arrival rate: 30 requests at 15/s end their arrivals at exactly 2 s.
check "rate run" "$lg" --base-url "http://127.0.0.1:$port" --num-prompts 30 --request-rate 15 \
  --burstiness 0.5 --random-input-len 8 --random-output-len 2 --ignore-eos \
  --result-filename "$tmp/r.json" --disable-tqdm --seed 7
check "rate: duration" json_ok "$tmp/r.json" \
  '2.0 <= r["duration"] <= 3.2 and r["completed"] == 30 and r["request_rate"] == 15 and r["burstiness"] == 0.5'

# 2b. A long prompt during decoding: its TTFT follows the fake's prefill cost
# (50 ms + 50 us/token x 20000 = 1.05 s); the other streams' gaps in that window are split out.
start_fake long --ttft-ms 50 --itl-ms 20 --prefill-us-per-token 50
check "long prompt run" "$lg" --base-url "http://127.0.0.1:$port" --num-prompts 6 \
  --max-concurrency 6 --random-input-len 16 --random-output-len 120 --ignore-eos \
  --long-prompt-len 20000 --long-prompt-at 0.4 --result-filename "$tmp/l.json" --disable-tqdm
check "long prompt: TTFT ~1.05 s" json_ok "$tmp/l.json" \
  'r["long_prompt_success"] and r["long_prompt_input_tokens"] == 20000 and 1040 <= r["long_prompt_ttft_ms"] <= 1400'
check "long prompt: ITL split" json_ok "$tmp/l.json" \
  'r["num_itl_during_long_prefill"] >= 250 and 18 <= r["mean_itl_during_long_prefill_ms"] <= 30 and r["num_itl_during_long_prefill"] + r["num_itl_outside_long_prefill"] == 6 * 119'
check "long prompt: main metrics exclude it" json_ok "$tmp/l.json" 'r["completed"] == 6 and r["total_input_tokens"] == 96'

# 3. Chat with an image and text prompts: the server sees a data: URL; usage gives lengths.
"$py" - "$tmp/px.png" <<'PY'
import struct, sys, zlib
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
raw = b"".join(b"\0" + bytes([200, 30, 30]) * 4 for _ in range(4))
png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0)) \
    + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)
PY
check "chat+image run" "$lg" --base-url "http://127.0.0.1:$port" --endpoint /v1/chat/completions \
  --num-prompts 6 --random-input-len 32 --random-output-len 3 --ignore-eos --image "$tmp/px.png" \
  --result-filename "$tmp/c.json" --disable-tqdm
check "chat+image: counts" json_ok "$tmp/c.json" \
  'r["completed"] == 6 and r["total_input_tokens"] == 6 * 33 and r["backend"] == "openai-chat"'
"$py" -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:$port/_stats').read().decode())" > "$tmp/stats.json"
check "chat+image: the image arrived" json_ok "$tmp/stats.json" \
  'r["last_body"]["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,iVBORw0KGgo")'
check "text prompts on completions" "$lg" --base-url "http://127.0.0.1:$port" --num-prompts 4 \
  --random-prompt text --random-input-len 20 --random-output-len 2 --result-filename "$tmp/x.json" --disable-tqdm
check "text prompts: usage lengths" json_ok "$tmp/x.json" 'r["total_input_tokens"] == 80'

# 4. Errors by class: 429s, error events mid-stream, a closed port.
start_fake errs --ttft-ms 5 --itl-ms 2 --fail-every 3
check "429 run" "$lg" --base-url "http://127.0.0.1:$port" --num-prompts 12 --max-concurrency 1 \
  --random-input-len 4 --random-output-len 4 --result-filename "$tmp/e.json" --disable-tqdm
check "429s counted" json_ok "$tmp/e.json" \
  'r["completed"] == 8 and r["failed"] == 4 and r["errors_by_status"] == {"429": 4}'
check "stream-error run" "$lg" --base-url "http://127.0.0.1:$port" --num-prompts 2 \
  --max-concurrency 1 --random-output-len 6 --ignore-eos --extra-body '{"user":"stream-error"}' \
  --result-filename "$tmp/s.json" --save-detailed --disable-tqdm
check "stream errors counted" json_ok "$tmp/s.json" \
  'r["errors_by_status"].get("stream", 0) >= 1 and r["completed"] + r["failed"] == 2 and any("engine failed" in e for e in r["errors"])'
check "closed port run" "$lg" --base-url "http://127.0.0.1:9" --model m --num-prompts 3 \
  --result-filename "$tmp/p.json" --disable-tqdm
check "transport errors counted" json_ok "$tmp/p.json" 'r["errors_by_status"] == {"transport": 3}'
if "$lg" --num-prompts 0 >/dev/null 2>&1; then
  echo "FAIL: --num-prompts 0 accepted"; fails=$((fails + 1)); else pass=$((pass + 1)); fi
if "$lg" --bogus >/dev/null 2>&1; then
  echo "FAIL: unknown flag accepted"; fails=$((fails + 1)); else pass=$((pass + 1)); fi

# 5. API key from the environment; without it, 401s.
start_fake keyed --ttft-ms 5 --itl-ms 2 --api-key sekrit
check "keyed run" env MMMAMBA_API_KEY=sekrit "$lg" --base-url "http://127.0.0.1:$port" \
  --num-prompts 3 --random-output-len 2 --result-filename "$tmp/k.json" --disable-tqdm
check "keyed: served" json_ok "$tmp/k.json" 'r["completed"] == 3'
check "keyless run" env -u MMMAMBA_API_KEY -u OPENAI_API_KEY "$lg" \
  --base-url "http://127.0.0.1:$port" --model mmmamba-fake --num-prompts 2 \
  --result-filename "$tmp/k2.json" --disable-tqdm
check "keyless: 401" json_ok "$tmp/k2.json" 'r["errors_by_status"] == {"401": 2}'
check "header K=V" env -u MMMAMBA_API_KEY -u OPENAI_API_KEY "$lg" \
  --base-url "http://127.0.0.1:$port" --header "Authorization=Bearer sekrit" --num-prompts 2 \
  --random-output-len 2 --result-filename "$tmp/k3.json" --disable-tqdm
check "header K=V: served" json_ok "$tmp/k3.json" 'r["completed"] == 2'

# 6. Hundreds of simultaneous streams from one process.
start_fake many --ttft-ms 1500 --itl-ms 100
check "many streams run" "$lg" --base-url "http://127.0.0.1:$port" --num-prompts 300 \
  --random-input-len 16 --random-output-len 3 --ignore-eos --result-filename "$tmp/m.json" --disable-tqdm
check "many streams: all concurrent" json_ok "$tmp/m.json" \
  'r["completed"] == 300 and r["max_concurrent_requests"] >= 250'

# 7. Small scale against the real daemon (CPU backend, tiny model).
. "$src/tests/clients/daemon.sh"
start_daemon lg
check "daemon: completions run" "$lg" --base-url "http://127.0.0.1:$port" --num-prompts 12 \
  --max-concurrency 4 --random-input-len 48 --random-output-len 6 --ignore-eos \
  --save-detailed --result-filename "$tmp/dd.json" --disable-tqdm
check "daemon: completions served" json_ok "$tmp/dd.json" \
  'r["completed"] == 12 and r["failed"] == 0 and r["total_output_tokens"] == 72 and 12 * 48 <= r["total_input_tokens"] <= 12 * 49'
check "daemon: timings" json_ok "$tmp/dd.json" \
  'r["mean_ttft_ms"] > 0 and r["mean_itl_ms"] > 0 and r["mean_ttft_ms"] < r["mean_e2el_ms"] and all(len(x) >= 1 for x in r["itls"])'
check "daemon: chat+image run" "$lg" --base-url "http://127.0.0.1:$port" \
  --endpoint /v1/chat/completions --num-prompts 4 --max-concurrency 2 --random-input-len 16 \
  --random-output-len 4 --ignore-eos --image "$tmp/px.png" --request-rate 8 \
  --result-filename "$tmp/dc.json" --disable-tqdm
check "daemon: chat+image served" json_ok "$tmp/dc.json" \
  'r["completed"] == 4 and r["total_output_tokens"] == 16 and r["total_input_tokens"] > 4 * 16'
finish
