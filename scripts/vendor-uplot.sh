#!/usr/bin/env bash
# Refresh the dashboard's charting library, uPlot (MIT), from the npm registry: `npm ci` against
# dashboard/package-lock.json (the pinned version and its integrity hash) in a scratch folder, then copy the
# minified build and its licence into dashboard/static/vendor/uplot/. Those copies are checked in (55 KB), so
# that setting up and running the platform needs no Node.js and no registry; run this only to change the version
# (edit dashboard/package.json, run `npm install --package-lock-only` in dashboard/, then this).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null || { echo "vendor-uplot: needs npm (apt-get install npm)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp dashboard/package.json dashboard/package-lock.json "$tmp/"
(cd "$tmp" && npm ci --ignore-scripts --no-audit --no-fund --silent)
src="$tmp/node_modules/uplot"
dest=dashboard/static/vendor/uplot
mkdir -p "$dest"
cp "$src/dist/uPlot.iife.min.js" "$src/dist/uPlot.min.css" "$src/LICENSE" "$dest/"
echo "vendor-uplot: uPlot $(node -p "require('$src/package.json').version") copied into $dest"
