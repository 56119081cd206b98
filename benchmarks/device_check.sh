#!/usr/bin/env bash
# One prepared check of this machine's accelerator (benchmarks/device_check.py says what it
# prints): on a GPU or TPU host, after `pip install -e .` and the accelerator's jax wheel,
#   bash benchmarks/device_check.sh            # DARTS' search size
#   bash benchmarks/device_check.sh --smoke    # tiny sizes, a few minutes on a CPU
set -euo pipefail
cd "$(dirname "$0")/.."
python -c 'import jaxnas' 2>/dev/null || pip install -q -e .
exec python benchmarks/device_check.py "$@"
