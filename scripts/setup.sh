#!/usr/bin/env bash
# Installs what Unpersonal needs beyond Rust, idempotently: the Fashion-MNIST data package
# (Debian) and a .venv with ONNX Runtime (the trainer's engine, loaded dynamically by `ort`),
# and the `onnx` checker and Pillow (the partner sampler reads PNGs) used by the tests.
# Nothing is downloaded outside apt and PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist
    else
        echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist'" >&2
        exit 1
    fi
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c "import onnxruntime, onnx, numpy, PIL" 2>/dev/null; then
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check onnxruntime==1.31.1 onnx==1.23.2 pillow==13.0.0
fi

