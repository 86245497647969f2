#!/usr/bin/env bash
# Install Debian's headless-capable Chromium if it is missing (idempotent). The console's
# browser tests drive it through playwright-core; Playwright's own browser builds are never
# downloaded. Prints the executable's path.
set -euo pipefail

for candidate in chromium chromium-browser; do
  if command -v "$candidate" >/dev/null 2>&1; then
    command -v "$candidate"
    exit 0
  fi
done
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
command -v chromium
