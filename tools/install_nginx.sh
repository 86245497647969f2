#!/usr/bin/env bash
# Install nginx from Debian's packages if it is missing (idempotent). The deployment tests run
# the gateway configuration (compose/gateway/nginx.conf) in it; nothing is started here.
set -euo pipefail

if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
  command -v nginx || echo /usr/sbin/nginx
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends nginx-light >&2 \
  || $SUDO apt-get install -y -qq --no-install-recommends nginx >&2
# The package starts a system nginx on port 80; the tests run their own.
$SUDO service nginx stop >/dev/null 2>&1 || true
command -v nginx || echo /usr/sbin/nginx
