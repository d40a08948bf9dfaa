#!/usr/bin/env bash
# Wheels that the GPU machine (no network; its own torch, Triton, numpy, scipy, e3nn) may lack:
# ASE and vesin (Python-version independent), tqdm, pytest and its dependencies (pure Python),
# and PyYAML for CPython 3.10-3.14 (the CLI imports the training package, which reads YAML). Run here, with network; then on the GPU machine
#   python benchmarks/gpu/run_gpu_checks.py --wheels benchmarks/gpu/wheels
# (the folder is git-ignored: pass it to the device tool's `carry`). About 9 MB.
set -euo pipefail
dest="${1:-$(dirname "$0")/wheels}"
mkdir -p "$dest"
python -m pip download --no-deps --only-binary=:all: --dest "$dest" "ase>=3.29" "vesin>=0.3" tqdm \
  pytest pluggy iniconfig packaging pygments
# pytest's back-ports for Python 3.10, pure Python
python -m pip download --no-deps --only-binary=:all: --dest "$dest" --python-version 3.10 \
  --platform any exceptiongroup tomli
for py in 3.10 3.11 3.12 3.13 3.14; do
  python -m pip download --no-deps --only-binary=:all: --dest "$dest" --python-version "$py" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 pyyaml
done
ls -la "$dest"
