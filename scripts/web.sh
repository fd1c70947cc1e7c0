#!/usr/bin/env bash
# Builds the page into dist/ with trunk (release, offline, tools from scripts/setup.sh) and,
# with `test`, runs its browser test (tests/web/page.test.mjs) against it.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/tests/web/node_modules/.bin:$PATH"
trunk build --release --offline --skip-version-check
if [ "${1:-}" = "test" ]; then
    node tests/web/page.test.mjs
fi
