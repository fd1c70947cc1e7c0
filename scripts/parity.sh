#!/usr/bin/env bash
# The runtime's WebGPU parity cases in headless Chromium: builds web/ for wasm32 with its
# `parity` feature (the page's `web` profile, wasm-bindgen, no wasm-opt: a test page, never
# dist/) into the target directory's parity-web/ and runs tests/web/parity.test.mjs against it.
# Run after scripts/web.sh, whose compiled dependencies it reuses. Arguments go to the test
# (`--timing B[,B…] N`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/tests/web/node_modules/.bin:$PATH"
target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --profile web --target wasm32-unknown-unknown -p unpersonal-web --features parity
wasm-bindgen --target web --no-typescript --out-dir "$target/parity-web" "$target/wasm32-unknown-unknown/web/unpersonal_web.wasm"
PARITY_PKG="$target/parity-web" node tests/web/parity.test.mjs "$@"
