#!/bin/sh
# Install a headless browser (Debian's chromium) for the report test that opens index.html in it
# (tests/analysis/test_report.py). Idempotent and quiet; needs root (or sudo). Without it
# that test is skipped with the reason.
set -eu

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-cache show chromium >/dev/null 2>&1; then
    $SUDO apt-get update -qq
fi
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
echo "install-browser: installed $(dpkg-query -W -f='chromium ${Version}' chromium)"
