#!/usr/bin/env bash
# The prepared GPU check (issue 12): every stage with its own time limit, all results in $1.
#
#   source .gpu/setup.sh && bash benchmarks/gpu_suite.sh "$OUT/gpu_suite"     # GPU machine
#   bash benchmarks/gpu_suite.sh /tmp/gpu_suite_quick --quick                  # CPU, tiny
#
# Stages and limits are in benchmarks/gpu_suite.py (see its docstring and BENCHMARKS.md).
set -uo pipefail
if [ $# -lt 1 ]; then
    echo "usage: bash benchmarks/gpu_suite.sh RESULTS_DIR [--quick] [--lego-steps N] [--only STAGE...]" >&2
    exit 2
fi
cd "$(dirname "$0")/.." || exit 1
exec python3 benchmarks/gpu_suite.py "$@"
