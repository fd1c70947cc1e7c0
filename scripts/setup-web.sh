#!/usr/bin/env bash
# Installs what the web page needs beyond scripts/setup.sh, idempotently: the wasm target,
# trunk and wasm-bindgen at the versions Trunk.toml pins, and, for its browser test, Debian's
# chromium plus playwright-core and binaryen's wasm-opt from npm (tests/web/package-lock.json).
# trunk itself never downloads anything.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v rustup >/dev/null; then
    rustup target add wasm32-unknown-unknown >/dev/null 2>&1
fi
if [ "$(trunk --version 2>/dev/null)" != "trunk 0.21.14" ]; then
    cargo install -q trunk --version 0.21.14 --locked
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen 0.2.130" ]; then
    cargo install -q wasm-bindgen-cli --version 0.2.130
fi
if ! command -v chromium >/dev/null; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium
    else
        echo "chromium is missing: run 'sudo apt-get install chromium'" >&2
        exit 1
    fi
fi
if [ ! -x tests/web/node_modules/.bin/wasm-opt ] || [ ! -d tests/web/node_modules/playwright-core ]; then
    (cd tests/web && npm ci --no-audit --no-fund --silent)
fi
