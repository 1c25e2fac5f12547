#!/usr/bin/env bash
# Render a run's report.html in headless Chromium (Debian: apt-get install chromium) and save a PNG screenshot,
# to look at the report as a user would.
#
#   scripts/screenshot_report.sh runs/quickstart /tmp/report.png [WIDTH [HEIGHT]]
#
# HEIGHT defaults to 4000 px, enough for the whole quickstart report; the page is rendered offline (no network).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 RUN_DIR OUT.png [WIDTH [HEIGHT]]" >&2
  exit 2
fi
run_dir=$1
out=$2
width=${3:-1280}
height=${4:-4000}
html="$(cd "$run_dir" && pwd)/report.html"
if [ ! -f "$html" ]; then
  echo "$html not found: write it first with: r1distill report $run_dir" >&2
  exit 2
fi
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
  echo "no chromium found: apt-get install -y chromium" >&2
  exit 2
fi
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
  --window-size="$width,$height" --screenshot="$out" "file://$html" 2>/dev/null
echo "$out"
