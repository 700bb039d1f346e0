#!/usr/bin/env bash
# Installs what the browser tests (tests/browser) drive: Debian's chromium and chromium-driver, from apt
# and nowhere else (Selenium Manager is never allowed to download a browser or a driver). Idempotent:
# prints nothing and changes nothing when both are already there. Needs root and apt-get to install.
# `make run` does not call this: only the tests need a browser.
set -euo pipefail

missing=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "browser.sh: please install Debian's ${missing[*]} (needs root and apt-get to do it here)" >&2
    exit 1
fi
echo "browser.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
