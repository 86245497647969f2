#!/usr/bin/env bash
# Install the KServe Python client (the `kserve` package, a peer the Open Inference Protocol
# tests drive as users would) into a virtual environment of its own under
# ~/.cache/kiln/peers/, never into Kiln's uv.lock (it pulls in a server's worth of packages).
# Idempotent: a stamp names the installed version. Prints the environment's python.
set -euo pipefail

VERSION="${KILN_KSERVE_VERSION:-0.15.2}"
CACHE="${KILN_CACHE_DIR:-$HOME/.cache/kiln}"
UV="$CACHE/tools/uv-0.13.9/bin/uv"
VENV="$CACHE/peers/kserve-$VERSION"
export UV_CACHE_DIR="${UV_CACHE_DIR:-$CACHE/uv}"
export UV_PYTHON_DOWNLOADS=never

if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.kiln-installed" 2>/dev/null)" = "$VERSION" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
if [ ! -x "$UV" ]; then
  echo "install_peer_kserve: uv is missing at $UV (run ./kiln once)" >&2
  exit 1
fi
PY="$(command -v python3.11 || command -v python3)"
rm -rf "$VENV"
"$UV" venv --quiet --python "$PY" "$VENV" >&2
"$UV" pip install --quiet --python "$VENV/bin/python" "kserve==$VERSION" >&2
echo "$VERSION" > "$VENV/.kiln-installed"
echo "$VENV/bin/python"
