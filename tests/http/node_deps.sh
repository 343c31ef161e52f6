# node_deps.sh (sourced by the HTTP suites that drive node): installs the npm
# packages pinned in tests/http/package.json (the official openai SDK, ajv)
# into $top_builddir/node_deps once, under a lock, so suites run in parallel
# by `make -j` neither race nor depend on each other's order. Sets $deps;
# skips the suite (tests/skip.sh: a failure in CI) without node, npm or the
# packages. Needs $top_builddir, $top_srcdir and mm_skip.
deps="$(cd "$top_builddir" && pwd)/node_deps"
mm_node_deps_install() {
  command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || return 1
  if [ ! -f "$deps/node_modules/openai/package.json" ] ||
     ! cmp -s "$top_srcdir/tests/http/package.json" "$deps/package.json"; then
    mkdir -p "$deps"
    cp "$top_srcdir/tests/http/package.json" "$deps/package.json"
    (cd "$deps" && npm install --no-audit --no-fund --loglevel=error >npm.log 2>&1) ||
      { cat "$deps/npm.log"; return 1; }
  fi
  return 0
}
mkdir -p "$deps"
if command -v flock >/dev/null 2>&1; then
  # the lock file lives beside the packages; fd 9 holds it while installing
  if ! (flock 9 && mm_node_deps_install) 9>"$deps/.lock"; then
    mm_skip "node, npm or the npm packages (openai, ajv) unavailable"
  fi
elif ! mm_node_deps_install; then
  mm_skip "node, npm or the npm packages (openai, ajv) unavailable"
fi
