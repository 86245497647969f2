#!/usr/bin/env bash
# Install the pinned kustomize into the Kiln tool cache (idempotent; CI calls it before the
# deployment tests). Built from source with the Go toolchain through the Go module proxy.
#   tools/install_kustomize.sh        -> prints the binary's path
set -euo pipefail

VERSION="v5.5.0"
MODULE="sigs.k8s.io/kustomize/kustomize/v5"
CACHE="${KILN_CACHE_DIR:-$HOME/.cache/kiln}"
BIN="$CACHE/bin/kustomize"
STAMP="$CACHE/bin/kustomize.version"

if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
  echo "$BIN"
  exit 0
fi

GO="$(command -v go || true)"
if [ -z "$GO" ] && [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; fi
if [ -z "$GO" ]; then
  echo "install_kustomize: needs a Go toolchain to build $MODULE@$VERSION" >&2
  exit 1
fi

mkdir -p "$CACHE/bin" "$CACHE/locks" "$CACHE/logs"
# One build at a time: parallel CI steps wait for the first instead of compiling twice.
exec 9>"$CACHE/locks/kustomize-build.lock"
flock 9
if [ -x "$BIN" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$VERSION" ]; then
  echo "$BIN"
  exit 0
fi
echo "install_kustomize: building $MODULE@$VERSION (log: $CACHE/logs/kustomize-build.log)" >&2
GOBIN="$CACHE/bin" CGO_ENABLED=0 "$GO" install "$MODULE@$VERSION" >"$CACHE/logs/kustomize-build.log" 2>&1 || {
  tail -20 "$CACHE/logs/kustomize-build.log" >&2
  exit 1
}
echo "$VERSION" >"$STAMP"
echo "$BIN"
