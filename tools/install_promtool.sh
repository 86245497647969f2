#!/usr/bin/env bash
# Install the pinned promtool (Prometheus 3.x, module v0.316.0) into the Kiln tool cache
# (idempotent; `kiln test` calls it through install_deploy_tools.sh before the
# alert-rule tests). Built from source with the Go toolchain through the Go module proxy
# (several minutes the first time: Prometheus brings its service-discovery clients along).
#   tools/install_promtool.sh        -> prints the binary's path
set -euo pipefail

VERSION="v0.316.0"
MODULE="github.com/prometheus/prometheus/cmd/promtool"
CACHE="${KILN_CACHE_DIR:-$HOME/.cache/kiln}"
BIN="$CACHE/bin/promtool"
STAMP="$CACHE/bin/promtool.version"

if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
  echo "$BIN"
  exit 0
fi

GO="$(command -v go || true)"
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
if [ -z "$GO" ]; then
  echo "install_promtool: needs a Go toolchain to build $MODULE@$VERSION" >&2
  exit 1
fi

mkdir -p "$CACHE/bin" "$CACHE/locks" "$CACHE/logs"
# One build at a time: parallel CI steps wait for the first instead of compiling twice.
exec 9>"$CACHE/locks/promtool-build.lock"
flock 9
if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
  echo "$BIN"
  exit 0
fi
echo "install_promtool: building $MODULE@$VERSION (log: $CACHE/logs/promtool-build.log)" >&2
GOBIN="$CACHE/bin" CGO_ENABLED=0 "$GO" install "$MODULE@$VERSION" >"$CACHE/logs/promtool-build.log" 2>&1 || {
  tail -20 "$CACHE/logs/promtool-build.log" >&2
  exit 1
}
echo "$VERSION" >"$STAMP"
echo "$BIN"
