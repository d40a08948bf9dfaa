#!/usr/bin/env bash
# Wheels that the GPU machine (no network; its own torch, Triton, numpy, scipy, e3nn) lacks:
# ASE and vesin (pure Python / Python-version independent), tqdm, and PyYAML for CPython
# 3.10-3.13 (training's config). Run here, with network; then on the GPU machine
#   python benchmarks/gpu/run_gpu_checks.py --wheels benchmarks/gpu/wheels
# (the folder is git-ignored: pass it to the device tool's `carry`). About 5 MB.
set -euo pipefail
dest="${1:-$(dirname "$0")/wheels}"
mkdir -p "$dest"
python -m pip download --no-deps --only-binary=:all: --dest "$dest" "ase>=3.29" "vesin>=0.3" tqdm
for py in 3.10 3.11 3.12 3.13; do
  python -m pip download --no-deps --only-binary=:all: --dest "$dest" --python-version "$py" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 pyyaml
done
ls -la "$dest"
