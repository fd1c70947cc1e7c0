#!/usr/bin/env bash
# Regenerates the kit's expected output (expected/<case>/) and noise.npy with the runtime on
# tract, after the shipped bundle or the sampler changed. Tolerances in kit.json are measured
# separately (docs/bundle.md, "Conformance").
set -euo pipefail
cd "$(dirname "$0")/../.."
unpersonal=${UNPERSONAL:-target/release/unpersonal}
kit=tests/conformance
common=(--bundle models/fashion-mnist --reference "$kit/reference" --sources 6 --quiet)
# The first case draws seed 0's noise with the runtime's generator; every case then uses it.
"$unpersonal" sample "${common[@]}" --solver dpmpp-2m --out "$kit/expected/dpmpp-2m"
cp "$kit/expected/dpmpp-2m/noise.npy" "$kit/noise.npy"
"$unpersonal" sample "${common[@]}" --noise "$kit/noise.npy" --solver heun --out "$kit/expected/heun"
rm "$kit"/expected/*/noise.npy
echo "wrote $kit/noise.npy and $kit/expected/{dpmpp-2m,heun}"
