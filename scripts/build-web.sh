#!/usr/bin/env bash
# Rebuild the web terminal's browser libraries in gateway/web/static/vendor/ from the npm
# registry: xterm.js and its fit add-on, at the versions (and integrity hashes) locked in
# scripts/web/package-lock.json, with their LICENSE files. The files are committed, so building
# or testing sshgw needs no npm; run this after changing scripts/web/package.json
# (`npm install --package-lock-only` there updates the lock).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null || { echo "build-web: npm is needed (Debian: apt-get install npm)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp scripts/web/package.json scripts/web/package-lock.json "$work/"
(cd "$work" && npm ci --no-audit --no-fund --ignore-scripts --silent)
out=gateway/web/static/vendor
rm -rf "$out"
mkdir -p "$out"
mods="$work/node_modules/@xterm"
# The source map comment is dropped: the maps are not shipped.
sed '/^\/\/# sourceMappingURL=/d' "$mods/xterm/lib/xterm.js" > "$out/xterm.js"
sed '/^\/\/# sourceMappingURL=/d' "$mods/addon-fit/lib/addon-fit.js" > "$out/addon-fit.js"
cp "$mods/xterm/css/xterm.css" "$out/xterm.css"
cp "$mods/xterm/LICENSE" "$out/LICENSE.xterm"
cp "$mods/addon-fit/LICENSE" "$out/LICENSE.addon-fit"
{
    echo "Built by scripts/build-web.sh from the npm registry:"
    for p in xterm addon-fit; do
        node -e 'const p=require(process.argv[1]); console.log(`  ${p.name} ${p.version} (${p.license})`)' \
            "$mods/$p/package.json"
    done
} > "$out/VERSIONS"
echo "build-web: $(ls "$out" | tr '\n' ' ')in $out"
