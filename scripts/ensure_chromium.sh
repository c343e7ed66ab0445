#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the browser tests (tests/e2e/test_dashboard.py).
#
# Does nothing when Chromium is already there ($TWEETGEN_CHROMIUM, default /usr/bin/chromium).
# Otherwise installs the Debian packages chromium and chromium-driver with apt-get (as root).
# When it cannot (not root, no apt-get, the install fails) it says why; the browser tests
# then skip, except under CI=true, where this script fails instead: CI must run them.
set -euo pipefail

chromium=${TWEETGEN_CHROMIUM:-/usr/bin/chromium}

cannot() {
  echo "ensure_chromium: $1" >&2
  if [ "${CI:-}" = "true" ]; then
    echo "ensure_chromium: CI=true: the browser tests must run, so this is an error" >&2
    exit 1
  fi
  echo "ensure_chromium: the browser tests will be skipped" >&2
  exit 0
}

if [ -x "$chromium" ] && "$chromium" --version >/dev/null 2>&1; then
  exit 0
fi
if [ -n "${TWEETGEN_CHROMIUM:-}" ]; then
  cannot "TWEETGEN_CHROMIUM=$chromium does not run"
fi
command -v apt-get >/dev/null 2>&1 ||
  cannot "no $chromium and no apt-get to install it: install Chromium and set TWEETGEN_CHROMIUM"
[ "$(id -u)" = 0 ] ||
  cannot "no $chromium: install it with 'sudo apt-get install -y chromium chromium-driver'"

echo "ensure_chromium: installing Debian's chromium and chromium-driver for the browser tests"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq || cannot "apt-get update failed"
apt-get install -y -qq chromium chromium-driver >/dev/null ||
  cannot "apt-get install -y chromium chromium-driver failed"
"$chromium" --version >/dev/null 2>&1 || cannot "$chromium was installed but does not run"
echo "ensure_chromium: installed $chromium"
