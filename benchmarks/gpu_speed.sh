#!/usr/bin/env bash
# GPU throughput and training memory (benchmarks/gpu_speed.py) under a hard limit of 85 s, for a session
# with device time to spare after the bundled-model training. Writes $OUT/gpu_speed.md (and .err).
#   OUT=gpu_out bash benchmarks/gpu_speed.sh [extra gpu_speed.py arguments]
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
# The script skips sections that would start after 75 s; timeout is the hard stop (what printed stays).
timeout -k 3 85 python benchmarks/gpu_speed.py --deadline 75 --compile "$@" > "$OUT/gpu_speed.md" 2> "$OUT/gpu_speed.err"
status=$?
echo "gpu_speed exit $status" >> "$OUT/gpu_speed.md"
exit $status
