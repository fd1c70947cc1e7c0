#!/usr/bin/env bash
# Every test: the tree's formatting (rustfmt.toml) and clippy's lints (warnings are errors),
# the Rust workspace (with the WebGPU backend on lavapipe when no GPU is there), then the page
# built by trunk and tested in Chromium, then the WebGPU parity cases in Chromium (after the
# page: its wasm build reuses the page's compiled dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-web.sh
bash scripts/setup-webgpu.sh
# wgpu wants a private runtime directory; a fresh CI machine may have none.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
cargo fmt --all --check
cargo clippy --workspace --all-targets --features unpersonal-runtime/webgpu -- -D warnings
cargo test --workspace --release --features unpersonal-runtime/webgpu
bash scripts/web.sh test
bash scripts/parity.sh
