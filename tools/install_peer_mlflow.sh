#!/usr/bin/env bash
# Install MLflow (the registry peer bench/registry.py compares against) into a virtual
# environment of its own under ~/.cache/kiln/peers/, never into Kiln's uv.lock; psycopg2-binary
# for its PostgreSQL backend store and boto3 for artifacts on MinIO (S3), as MLflow's docs set
# up a tracking server. Idempotent: a stamp names the installed version. Prints the python.
set -euo pipefail

VERSION="${KILN_MLFLOW_VERSION:-3.17.2}"
CACHE="${KILN_CACHE_DIR:-$HOME/.cache/kiln}"
UV="$CACHE/tools/uv-0.13.9/bin/uv"
VENV="$CACHE/peers/mlflow-$VERSION"
export UV_CACHE_DIR="${UV_CACHE_DIR:-$CACHE/uv}"
export UV_PYTHON_DOWNLOADS=never

if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.kiln-installed" 2>/dev/null)" = "$VERSION" ]; then
  echo "$VENV/bin/python"
  exit 0
fi
if [ ! -x "$UV" ]; then
  echo "install_peer_mlflow: uv is missing at $UV (run ./kiln once)" >&2
  exit 1
fi
PY="$(command -v python3.11 || command -v python3)"
rm -rf "$VENV"
"$UV" venv --quiet --python "$PY" "$VENV" >&2
"$UV" pip install --quiet --python "$VENV/bin/python" "mlflow==$VERSION" psycopg2-binary boto3 >&2
echo "$VERSION" > "$VENV/.kiln-installed"
echo "$VENV/bin/python"
