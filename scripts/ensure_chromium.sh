#!/usr/bin/env bash
# The report's browser test needs Debian's chromium. Install it once; a no-op (and quick)
# when it is already there. Without root or apt, say so and let the test skip itself.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "chromium: not installed and cannot apt-get it here; the browser test will skip" >&2
  exit 0
fi
echo "chromium: installing Debian's chromium for the report's browser test"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q chromium >/dev/null 2>&1 || {
  apt-get update -q >/dev/null 2>&1
  apt-get install -y -q chromium >/dev/null
}
