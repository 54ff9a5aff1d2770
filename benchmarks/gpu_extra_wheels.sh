#!/usr/bin/env bash
# Pure-Python wheels the GPU suite needs beside ../shared/gpu/prepare_carry.py's: pytest (and its
# needs), pytest-timeout (per-test limits), tqdm, imageio (in case the machine lacks them). They
# land in .gpu/wheels, which .gpu/setup.sh installs on the GPU machine. Run after
# prepare_carry.py (which recreates .gpu/); about 2.5 MiB, so .gpu/ holds ~58 MiB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d .gpu/wheels ] || { echo "run python ../shared/gpu/prepare_carry.py first" >&2; exit 2; }
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp -d .gpu/wheels \
    pytest pytest-timeout iniconfig pluggy packaging pygments tqdm imageio
du -sh .gpu
