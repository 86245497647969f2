#!/usr/bin/env bash
# Install Label Studio (the annotation peer bench/annotation.py compares against) into a virtual
# environment of its own under ~/.cache/kiln/peers/, never into Kiln's uv.lock. psycopg2-binary
# is its PostgreSQL driver and uWSGI its server, as Label Studio's production image runs it
# (deploy/uwsgi.ini). Idempotent: a stamp names the
# installed version. Prints the environment's python.
set -euo pipefail

VERSION="${KILN_LABEL_STUDIO_VERSION:-1.23.2}"
STAMP="$VERSION+uwsgi-2.0.31"
CACHE="${KILN_CACHE_DIR:-$HOME/.cache/kiln}"
UV="$CACHE/tools/uv-0.13.9/bin/uv"
VENV="$CACHE/peers/label-studio-$VERSION"
export UV_CACHE_DIR="${UV_CACHE_DIR:-$CACHE/uv}"
export UV_PYTHON_DOWNLOADS=never

if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.kiln-installed" 2>/dev/null)" = "$STAMP" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
if [ ! -x "$UV" ]; then
  echo "install_peer_labelstudio: uv is missing at $UV (run ./kiln once)" >&2
  exit 1
fi
PY="$(command -v python3.11 || command -v python3)"
rm -rf "$VENV"
"$UV" venv --quiet --python "$PY" "$VENV" >&2
"$UV" pip install --quiet --python "$VENV/bin/python" "label-studio==$VERSION" psycopg2-binary "uwsgi==2.0.31" >&2
echo "$STAMP" > "$VENV/.kiln-installed"
echo "$VENV/bin/python"
