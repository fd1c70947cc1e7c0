#!/usr/bin/env bash
# Installs a Vulkan driver for the WebGPU backend's tests on a machine without a GPU: Mesa's
# lavapipe (software Vulkan) and the Vulkan loader, from apt. A machine with a GPU driver that
# wgpu finds needs nothing.
set -euo pipefail

if ! ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || ! ldconfig -p | grep -q libvulkan.so.1; then
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && apt-get install -y -qq --no-install-recommends mesa-vulkan-drivers libvulkan1
    else
        echo "lavapipe is missing: run 'sudo apt-get install mesa-vulkan-drivers libvulkan1'" >&2
        exit 1
    fi
fi
