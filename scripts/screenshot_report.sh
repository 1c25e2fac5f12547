#!/usr/bin/env bash
# Render a run's report.html in headless Chromium (Debian: apt-get install chromium) and save a PNG screenshot,
# to look at the report as a user would.
#
#   scripts/screenshot_report.sh runs/quickstart /tmp/report.png [WIDTH [HEIGHT]]
#
# HEIGHT defaults to the whole report: a first pass lays the page out at WIDTH (offline, no network) and reads its
# height from the DOM (a fixed 4000 px cut the report off), so the screenshot holds every section.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 RUN_DIR OUT.png [WIDTH [HEIGHT]]" >&2
  exit 2
fi
run_dir=$1
out=$2
width=${3:-1280}
html="$(cd "$run_dir" && pwd)/report.html"
if [ ! -f "$html" ]; then
  echo "$html not found: write it first with: r1distill report $run_dir" >&2
  exit 2
fi
browser=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}
if [ -z "$browser" ]; then
  echo "no chromium found: apt-get install -y chromium" >&2
  exit 2
fi
profile=$(mktemp -d)
probe=$(mktemp --suffix=.html)
trap 'rm -rf "$profile" "$probe"' EXIT
flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile")
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac
height=${4:-}
if [ -z "$height" ]; then
  # A copy of the page that writes its own laid-out height into the DOM once loaded; --dump-dom prints it.
  sed 's#</body>#<script>addEventListener("load",()=>document.body.setAttribute("data-page-height",Math.ceil(document.documentElement.scrollHeight)))</script></body>#' \
    "$html" > "$probe"
  height=$("$browser" "${flags[@]}" --window-size="$width,1000" --virtual-time-budget=5000 --dump-dom \
             "file://$probe" 2>/dev/null | grep -o 'data-page-height="[0-9]*"' | head -1 | grep -o '[0-9]*' || true)
  if [ -z "$height" ]; then
    # No height from the DOM (an old browser, a sandbox that blocks --dump-dom): estimate it from the page, the
    # embedded figures' heights plus a generous line per table row, paragraph, heading and preformatted line,
    # so that the screenshot is too tall rather than cut off.
    imgs=$(grep -o '<img [^>]*height="[0-9]*"' "$html" | grep -o 'height="[0-9]*"' | grep -o '[0-9]*' \
             | awk '{s += $1 + 18} END {print s + 0}')
    lines=$(grep -o '<tr\|<p\|<h2\|<section\|<div class="card' "$html" | wc -l)
    pre=$(awk '/<pre/,/<\/pre>/' "$html" | wc -l)
    height=$((imgs + 34 * lines + 19 * pre + 400))
    echo "could not read the page height from $browser; estimated $height px from the HTML (or pass HEIGHT)" >&2
  fi
  height=$((height + 16))  # the bottom margin
fi
"$browser" "${flags[@]}" --window-size="$width,$height" --screenshot="$out" "file://$html" 2>/dev/null
echo "$out ($width x $height)"
