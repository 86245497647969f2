#!/usr/bin/env bash
# Everything the deployment tests (tests/deploy) need beyond the Python environment, installed
# idempotently: the pinned kustomize and promtool (Go module proxy) and nginx (Debian). CI calls this once
# before the tests; the tests also call the single installers when a tool is missing.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
kustomize="$("$HERE/install_kustomize.sh")"
promtool="$("$HERE/install_promtool.sh")"
nginx="$("$HERE/install_nginx.sh")"
echo "deploy tools ready: kustomize $kustomize, promtool $promtool, nginx $nginx"
