#!/bin/sh
# check_mmmambad_config.sh: the daemon's option table. etc/mmmambad.conf must
# be exactly what `mmmambad --print-config` prints (one table serves both);
# the file parses, flags override it, and bad values are refused naming the
# option (file errors name the file and line).
set -eu
bin="${top_builddir:-.}/mmmambad"
src="${top_srcdir:-.}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
expect_error() { # name, expected text, command...
  name=$1; want=$2; shift 2
  if "$@" >"$tmp/out" 2>&1; then fail "$name: accepted"; return; fi
  grep -qF -- "$want" "$tmp/out" || { fail "$name: message lacks '$want'"; cat "$tmp/out"; }
}
"$bin" --print-config > "$tmp/conf"
cmp -s "$tmp/conf" "$src/etc/mmmambad.conf" ||
  { fail "etc/mmmambad.conf differs from --print-config (regenerate it)"; diff "$tmp/conf" "$src/etc/mmmambad.conf" | head; }
# every option in the help is in the file, with a default line
"$bin" --help > "$tmp/help"
for flag in $(grep -oE '^  --[a-z-]+' "$tmp/help" | sed 's/^  --//' | grep -vE '^(config|print-config|help)$'); do
  name=$(echo "$flag" | tr - _)
  grep -qE "^#? ?$name " "$src/etc/mmmambad.conf" || fail "option $name missing from the file"
done
# the example file itself parses (check stops at the model directory, which does not exist here)
expect_error "shipped file parses" "/var/lib/mmmambad/model" "$bin" --config "$src/etc/mmmambad.conf" --port 1 --max-queue 3
printf 'port 9000\nmax_queue 7\n# comment\n\nlog_level "warn"\nfile_root ""\n' > "$tmp/a.conf"
expect_error "quoted and empty values" "no model" "$bin" --config "$tmp/a.conf"
expect_error "unknown file option" "$tmp/b.conf:2: unknown option \"nosuch\"" sh -c "printf 'port 1\nnosuch 3\n' > $tmp/b.conf; \"$bin\" --config $tmp/b.conf"
expect_error "bad file value" "$tmp/c.conf:1: max_queue" sh -c "printf 'max_queue -4\n' > $tmp/c.conf; \"$bin\" --config $tmp/c.conf"
expect_error "bad port" "port: \"99999\" is not an integer" "$bin" --port 99999
expect_error "bad size" "max_body_bytes" "$bin" --max-body-bytes 12q
expect_error "bad enum" "backend: \"tpu\" is not one of auto|cpu|cuda|cuda-fp32" "$bin" --backend tpu
expect_error "cuda-fp32 is a backend" "no model" "$bin" --backend cuda-fp32 --port 1
expect_error "bad bool" "access_log: \"maybe\" is not yes or no" "$bin" --access-log maybe
expect_error "missing value" "--port needs a value" "$bin" --port
expect_error "positional" "unexpected argument \"extra\"" "$bin" extra
expect_error "unknown flag" "unknown option \"--nosuch\"" "$bin" --nosuch 1
expect_error "no model" "no model" "$bin" --port 1
expect_error "missing file" "nosuch.conf" "$bin" --config "$tmp/nosuch.conf"
# flags override the file, whatever their order
printf 'model %s/nomodel-file\n' "$tmp" > "$tmp/m.conf"
expect_error "file model used" "$tmp/nomodel-file" "$bin" --config "$tmp/m.conf"
expect_error "flag beats file" "$tmp/nomodel-flag" "$bin" --model "$tmp/nomodel-flag" --config "$tmp/m.conf"
"$bin" --version | grep -q '^mmmambad [0-9]' || fail "--version"
# the systemd unit, with this build's paths, passes systemd-analyze verify (when it is here)
if command -v systemd-analyze >/dev/null 2>&1; then
  bindir=$(cd "$(dirname "$bin")" && pwd)
  sed -e "s|@bindir@|$bindir|g" -e "s|@sysconfdir@|$src/etc|g" "$src/systemd/mmmambad.service.in" > "$tmp/mmmambad.service"
  systemd-analyze verify "$tmp/mmmambad.service" > "$tmp/verify" 2>&1 || fail "systemd-analyze verify failed"
  [ -s "$tmp/verify" ] && { fail "systemd-analyze verify is not clean"; cat "$tmp/verify"; }
  grep -q '^Type=notify' "$tmp/mmmambad.service" || fail "unit is not Type=notify"
else
  echo "note: systemd-analyze not installed; unit not verified"
fi
[ "$fails" -eq 0 ] || exit 1
echo "config checks passed"
