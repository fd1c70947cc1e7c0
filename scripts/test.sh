#!/usr/bin/env bash
# Every test: the Rust workspace, then the page built by trunk and tested in Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/setup-web.sh
cargo test --workspace --release
bash scripts/web.sh test
