#!/usr/bin/env bash
# One prepared call on a GPU machine: trains the bundled model for a fixed time budget, scores it on the
# Motorcycle pair, and measures GPU inference speed. Results land in $OUT (train.log, metrics, weights in
# shards of < 16 MiB, speed_gpu.md).
#   OUT=gpu_out bash scripts/gpu_session.sh [TRAIN_SECONDS]
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src" PYTHONUNBUFFERED=1
BUDGET=${1:-140}
RUN=/tmp/madis_bundled_run
rm -rf "$RUN"  # a second call on a warm machine must not resume or bundle the previous run
(nvidia-smi -L; python -c "import torch; print('torch', torch.__version__)") > "$OUT/gpu.txt" 2>&1
OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 timeout $((BUDGET + 45)) \
    python -m madis_stereo train configs/bundled_small.yaml \
    optim.time_budget_s="$BUDGET" --out "$RUN" > "$OUT/train.log" 2>&1
echo "train exit $?" >> "$OUT/train.log"
cp "$RUN/metrics.jsonl" "$RUN/config.yaml" "$OUT/" 2>/dev/null
timeout 40 python scripts/bundle_model.py "$RUN" "$OUT" --shards 3 >> "$OUT/train.log" 2>&1
echo "bundle exit $?" >> "$OUT/train.log"
timeout 50 python benchmarks/speed.py --device cuda --preset vitb_basedec --size 352 704 --tiled 375 1242 \
    --tile-batch 8 --precision fp32,bf16 --runs 5 --warmup 2 --markdown --no-diff \
    > "$OUT/speed_gpu.md" 2> "$OUT/speed_gpu.err"
echo "speed exit $?" >> "$OUT/train.log"
